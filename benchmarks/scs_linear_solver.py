"""SCS's linear-system back ends on each workload's cone program: why dpplayers picks one.

SCS factorises a KKT system of order n + m once per set-up. Its default ("auto") is MKL
Pardiso wherever MKL is installed, else the bundled QDLDL. This times set-up and solve of
bare SCS (same settings as the benchmarks: eps 1e-8) with each back end available here, at
batch 1, and prints which one dpplayers' rule (``dpplayers._solve.backends.QDLDL_MAX_ORDER``) picks.

    python benchmarks/scs_linear_solver.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import scs

import dpplayers
from benchmarks.workloads import WORKLOADS


def _available() -> list[str]:
    kinds = ["qdldl"]
    try:
        importlib.import_module("scs._scs_mkl")
        kinds.append("mkl")
    except ImportError:
        pass
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    kinds = _available()
    print("| workload | KKT order | " + " | ".join(f"{k}: set-up + solve (ms)" for k in kinds)
          + " | dpplayers picks |")
    print("|---|---|" + "---|" * len(kinds) + "---|")
    for name, workload in WORKLOADS.items():
        form = workload.formulations()["native"]
        prog = dpplayers.compile(form.problem, list(form.parameters), [form.output], gp=form.gp)
        settings = prog.backend.settings({"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iters": 100_000})
        picked = settings.pop("linear_solver")
        theta = prog.layout.stack([v[0] for v in workload.values(1)["native"]])[0]
        P, A, b, c = prog.element_data(prog.data(theta), 0)
        data = {"A": A, "b": b, "c": c} | ({"P": P} if P is not None else {})
        cones = prog.backend._cone_dict
        cells = []
        repeats = max(3, args.repeats // 5) if prog.n + prog.m > 2000 else args.repeats
        for kind in kinds:
            setup, solve = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                workspace = scs.SCS(data, cones, linear_solver=kind, **settings)
                t1 = time.perf_counter()
                workspace.solve(warm_start=False)
                setup.append(t1 - t0)
                solve.append(time.perf_counter() - t1)
            s, v = 1e3 * np.median(setup), 1e3 * np.median(solve)
            cells.append(f"{s:.2f} + {v:.2f} = {s + v:.2f}")
        print(f"| {name} | {prog.n + prog.m} | " + " | ".join(cells)
              + f" | {getattr(picked, 'value', picked)} |")


if __name__ == "__main__":
    main()
