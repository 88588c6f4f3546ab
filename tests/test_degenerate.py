"""Elimination edge cases and degenerate (non-unique) solutions.

Item 7 of issue #17: every elimination route (the batched dense solve with its 2×2 pair
pivots, and ``Direct``'s per-element singleton peeling) on problems where it removes
everything (equality-only problems), nothing, or leaves a zero-sized block, in every
derivative mode and batch size, against central finite differences of CVXPY's own solves.

Item 5: a problem whose canonical solution is non-unique (an auxiliary variable free on a
segment) gives a near-singular J at an interior-point solution; the derivative solve must
detect it, flag ``degenerate`` and return the minimum-norm least-squares answer.
"""

from __future__ import annotations

import functools

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
import dpplayers.solution as solution_module

MODES = ["direct", "dense", "lsqr", "lsmr"]
BATCHES = [None, 1, 2, 5]
CVXPY_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12}
TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "max_iter": 500}


# -- item 7: elimination edge cases ----------------------------------------------------------


def _equality_only_matrix():
    """min ‖x‖² s.t. A x = b: every unknown meets an equality, none an inequality."""
    A, b, x = cp.Parameter((2, 4)), cp.Parameter(2), cp.Variable(4)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x)), [A @ x == b])
    return prob, [A, b], x, lambda rng: [rng.standard_normal((2, 4)), rng.standard_normal(2)]


def _fixed_by_parameter():
    """min ‖x‖² s.t. x = p: every unknown is a 2×2 pair pivot, S is 0 × 0."""
    p, x = cp.Parameter(3), cp.Variable(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x)), [x == p])
    return prob, [p], x, lambda rng: [rng.standard_normal(3)]


def _fixed_linear():
    """min 1ᵀx s.t. x = p (an LP): every unknown is a singleton pair, the core is empty."""
    p, x = cp.Parameter(3), cp.Variable(3)
    prob = cp.Problem(cp.Minimize(cp.sum(x) + 0.5 * x[0]), [x == p])
    return prob, [p], x, lambda rng: [rng.standard_normal(3)]


def _box_lp():
    """min 1ᵀx s.t. p ≤ x ≤ p + 1: every row is a bound (peeled) or inactive (dropped)."""
    p, x = cp.Parameter(3), cp.Variable(3)
    prob = cp.Problem(cp.Minimize(cp.sum(x)), [x >= p, x <= p + 1])
    return prob, [p], x, lambda rng: [rng.standard_normal(3)]


def _soc_only():
    """min cᵀx s.t. ‖x − p‖ ≤ 1: one SOC block, no P, no bound: nothing to eliminate."""
    p, c, x = cp.Parameter(3), cp.Parameter(3), cp.Variable(3)
    prob = cp.Problem(cp.Minimize(c @ x), [cp.norm(x - p, 2) <= 1])
    return prob, [p, c], x, lambda rng: [rng.standard_normal(3), rng.standard_normal(3)]


def _inactive_only():
    """min ‖x − p‖² s.t. x ≤ 10 (never active): dropped rows, no equality row at all."""
    p, x = cp.Parameter(3), cp.Variable(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [x <= 10])
    return prob, [p], x, lambda rng: [rng.standard_normal(3)]


EDGE_PROBLEMS = {f.__name__[1:]: f for f in [_equality_only_matrix, _fixed_by_parameter,
                                              _fixed_linear, _box_lp, _soc_only,
                                              _inactive_only]}


def _cvxpy_solve(prob, params, x, values):
    for param, value in zip(params, values):
        param.value = value
    prob.solve(solver="CLARABEL", **CVXPY_TIGHT)
    return np.array(x.value, dtype=float).ravel()


@functools.cache
def _oracle(name: str) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
    """Two parameter points and, at each, dx/dθ (x.size × θ entries) by central finite
    differences of CVXPY's own Clarabel solves (the map is affine or nearly: h = 1e-4)."""
    prob, params, x, sample = EDGE_PROBLEMS[name]()
    rng = np.random.default_rng(7)
    points, jacobians = [], []
    for _ in range(2):
        values = sample(rng)
        flat = np.concatenate([np.ravel(v) for v in values])
        sizes = np.cumsum([np.size(v) for v in values])[:-1]

        def at(theta):
            parts = np.split(theta, sizes)
            return _cvxpy_solve(prob, params, x, [p.reshape(np.shape(v))
                                                  for p, v in zip(parts, values)])

        h = 1e-4
        cols = [(at(flat + h * e) - at(flat - h * e)) / (2 * h) for e in np.eye(flat.size)]
        points.append(values)
        jacobians.append(np.stack(cols, axis=1))
    return points, jacobians


#: (mode, route): the batched dense solve (the default for these small J), or ``Direct``
#: for every element (the batched solve's size limit lowered below any J).
ROUTES = [("direct", "batched"), ("direct", "per_element"), ("dense", ""), ("lsqr", ""),
          ("lsmr", "")]


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("mode, route", ROUTES, ids=lambda r: r)
@pytest.mark.parametrize("name", list(EDGE_PROBLEMS))
def test_every_elimination_route_matches_finite_differences(name, mode, route, batch,
                                                             monkeypatch):
    """vjp, jvp and jacobian() agree with CVXPY finite differences; no crash, no flag."""
    if route == "per_element":
        monkeypatch.setattr(solution_module, "BATCH_DENSE_MAX", -1)
    points, jacobians = _oracle(name)
    prob, params, x, _ = EDGE_PROBLEMS[name]()
    prog = dpplayers.compile(prob, params, [x], solver="CLARABEL")
    which = [0] if batch is None else [k % 2 for k in range(batch)]
    values = points[0] if batch is None else [np.stack([points[k][i] for k in which])
                                              for i in range(len(params))]
    sol = prog.solve(*values, solver_args={**TIGHT, "mode": mode})
    refs = [jacobians[k] for k in which]
    rng = np.random.default_rng(1)
    lead = () if batch is None else (batch,)
    w = rng.standard_normal((*lead, *x.shape))
    dirs = [rng.standard_normal((*lead, *p.shape)) for p in params]
    grads = sol.vjp(w)
    tangent = sol.jvp(*dirs)[0]
    jac = sol.jacobian()[0]
    for i, ref in enumerate(refs):
        at = () if batch is None else (i,)
        d = np.concatenate([np.ravel(dd[at]) for dd in dirs])
        g = np.concatenate([np.ravel(gg[at]) for gg in grads])
        J = np.concatenate([np.reshape(b[at], (x.size, -1)) for b in jac], axis=1)
        np.testing.assert_allclose(J, ref, atol=1e-6)
        np.testing.assert_allclose(np.ravel(tangent[at]), ref @ d, atol=1e-6)
        np.testing.assert_allclose(g, ref.T @ np.ravel(w[at]), atol=1e-6)
    assert not sol.degenerate.any()
