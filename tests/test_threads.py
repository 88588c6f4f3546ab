"""The shared thread pool (dpplayers._threads): a batch's derivative chunks go to it only
where BLAS runs on one thread, and what they compute there equals serial solves."""

from __future__ import annotations

import threading

import cvxpy as cp
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import dpplayers
from dpplayers import _threads
from dpplayers._derivative import batch as batch_module


def test_map_keeps_order_and_runs_one_item_in_the_caller():
    assert _threads.parallel_map(lambda x: x * x, range(7), 2) == [x * x for x in range(7)]
    where = []
    _threads.parallel_map(lambda x: where.append(threading.current_thread()), [1], 4)
    _threads.parallel_map(lambda x: where.append(threading.current_thread()), [1, 2], 1)
    assert all(t is threading.current_thread() for t in where)


def test_blas_single_threaded_reads_the_current_setting():
    with threadpool_limits(1, user_api="blas"):
        assert _threads.blas_single_threaded()
    with threadpool_limits(2, user_api="blas"):
        assert not _threads.blas_single_threaded()


@pytest.fixture(scope="module")
def spectraplex():
    """Projections onto the spectraplex of order 20: the backward's blocks fill a chunk
    per two elements (batch 4: two chunks)."""
    n, B = 20, 4
    C = cp.Parameter((n, n), symmetric=True)
    X = cp.Variable((n, n), symmetric=True)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(X - C)),
                                        [X >> 0, cp.trace(X) == 1]), [C], [X])
    rng = np.random.default_rng(0)
    Cs, w = rng.standard_normal((2, B, n, n))
    return prog, Cs + Cs.transpose(0, 2, 1), w + w.transpose(0, 2, 1)


@pytest.mark.parametrize("blas_threads, pooled", [(1, True), (2, False)])
def test_chunks_go_to_the_pool_only_with_single_threaded_blas(spectraplex, blas_threads,
                                                              pooled, monkeypatch):
    """Pooled or not, each element's gradient equals its own serial solve's."""
    prog, Cs, w = spectraplex
    calls = []
    original = batch_module.parallel_map

    def counted(fn, items, workers):
        items = list(items)
        calls.append((len(items), workers))
        return original(fn, items, workers)

    monkeypatch.setattr(batch_module, "parallel_map", counted)
    args = {"eps": 1e-10}
    with threadpool_limits(blas_threads, user_api="blas"):
        sol = prog.solve(Cs, solver_args=args)
        (g,) = sol.vjp(w)
    (chunks, workers), = calls
    assert chunks > 1 and (workers > 1) == (pooled and _threads.CPU_COUNT > 1)
    for k in range(len(Cs)):
        one = prog.solve(Cs[k], solver_args=args)
        np.testing.assert_allclose(sol.values[0][k], one.values[0], atol=1e-7)
        np.testing.assert_allclose(g[k], one.vjp(w[k])[0], atol=1e-6)
