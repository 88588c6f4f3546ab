"""The benchmark corpus stays runnable: every workload compiles, its sampled values are
solved at two draws, and its derivative is finite and not flagged degenerate (a workload
whose canonical solution is not unique would time the minimum-norm fallback, not the
route it stands for)."""

from __future__ import annotations

import numpy as np
import pytest

import dpplayers
from benchmarks.workloads import WORKLOADS


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_workload_solves_and_differentiates(name):
    w = WORKLOADS[name]
    for key, form in w.formulations().items():
        prog = dpplayers.compile(form.problem, list(form.parameters), [form.output], gp=form.gp)
        for draw in (0, 1):
            sol = prog.solve(*w.values(1, draw)[key], solver_args={"eps": 1e-8})
            assert sol.ok.all() and sol.accurate.all(), (key, draw, sol.status)
            grads = sol.vjp(np.ones(sol.values[0].shape))
            assert all(np.isfinite(g).all() for g in grads)
            assert not sol.degenerate.any(), (key, draw)
