"""Per-thread scratch arrays (dpplayers._derivative.scratch) and the batched solve that reuses them."""

import threading

import numpy as np
from helpers import CASES

import dpplayers
from dpplayers._derivative.scratch import scratch

TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "max_iter": 500}


def test_one_buffer_per_name_and_thread():
    a = scratch("x", (2, 3))
    assert a.shape == (2, 3) and a.dtype == np.float64
    assert np.shares_memory(a, scratch("x", (1, 4)))  # smaller: the same buffer
    assert not np.shares_memory(a, scratch("y", (2, 3)))  # another name
    larger = scratch("x", (3, 3))  # larger: a new buffer, kept from then on
    assert not np.shares_memory(a, larger) and np.shares_memory(larger, scratch("x", (2, 3)))
    other = {}
    thread = threading.Thread(target=lambda: other.setdefault("x", scratch("x", (2, 3))))
    thread.start()
    thread.join()
    assert not np.shares_memory(other["x"], larger)  # another thread: its own


def _solved(name, seed, batch):
    """A batch solved, and random cotangents on its outputs and tangents on its parameters."""
    case = CASES[name]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables, solver="CLARABEL")
    rng = np.random.default_rng(seed)
    values = [np.stack(v) for v in zip(*[case.sample(rng) for _ in range(batch)])]
    sol = prog.solve(*values, solver_args=TIGHT)
    w = [rng.standard_normal(v.shape) for v in sol.values]
    dirs = [rng.standard_normal(v.shape) for v in values]
    return sol, w, dirs


def test_results_do_not_alias_the_scratch_arrays():
    """A later batched solve (another program, larger blocks) must not change what an
    earlier vjp or jvp returned."""
    first, w1, d1 = _solved("sdp_nearest_correlation", 0, 4)
    grads, tangents = first.vjp(*w1), first.jvp(*d1)
    kept = [g.copy() for g in (*grads, *tangents)]
    second, w2, d2 = _solved("qp_box_projection", 1, 6)
    second.vjp(*w2)
    second.jvp(*d2)
    for got, want in zip((*grads, *tangents), kept):
        np.testing.assert_array_equal(got, want)
    assert not first._derivative.factors and not second._derivative.factors  # both went through the batched solve


def test_vjps_in_two_threads_match_serial_ones():
    jobs = [_solved("sdp_nearest_correlation", 2, 3)[:2], _solved("qp_box_projection", 3, 5)[:2]]
    serial = [sol.vjp(*w) for sol, w in jobs]
    results = [[], []]

    def run(i):
        sol, w = jobs[i]
        for _ in range(20):
            results[i].append(sol.vjp(*w))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for grads in results[i]:
            for got, want in zip(grads, serial[i]):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_pair_pivot_solutions_are_not_views_of_scratch():
    """z and the residual of one pair-pivot solve survive the next solve's (same thread,
    same scratch arrays): they are the caller's own arrays."""
    from test_pair_pivots import pivots_of, planted

    rng = np.random.default_rng(9)
    first = planted(rng, r=6, e=3, b=2)[0]
    second = planted(rng, r=9, e=5, b=4)[0]
    (pv1, v1), (pv2, v2) = pivots_of(first), pivots_of(second)
    rhs1 = rng.standard_normal((2, first.shape[1], 1))
    z, res = pv1.solve(v1, rhs1, False)
    kept = z.copy(), res.copy()
    pv2.solve(v2, rng.standard_normal((4, second.shape[1], 1)), True)
    np.testing.assert_array_equal(z, kept[0])
    np.testing.assert_array_equal(res, kept[1])
    np.testing.assert_allclose(z, np.linalg.solve(first, rhs1), rtol=1e-10, atol=1e-12)
