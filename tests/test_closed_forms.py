"""Layers whose solution maps are known in closed form, and degenerate points."""

import cvxpy as cp
import numpy as np
import pytest

import dpplayers

TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "refine": 3}


def test_relu():
    n = 6
    x = cp.Parameter(n)
    y = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(y - x)), [y >= 0])
    prog = dpplayers.compile(prob, [x], [y], solver="CLARABEL")
    xv = np.array([-2.0, -0.5, 0.3, 1.0, 2.5, -0.1])
    sol = prog.solve(xv, solver_args=TIGHT)
    np.testing.assert_allclose(sol.values[0], np.maximum(xv, 0), atol=1e-9)
    np.testing.assert_allclose(sol.jacobian()[0][0], np.diag((xv > 0).astype(float)), atol=1e-8)


def test_softmax():
    n = 5
    z = cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Maximize(z @ x + cp.sum(cp.entr(x))), [cp.sum(x) == 1])
    prog = dpplayers.compile(prob, [z], [x], solver="CLARABEL")
    zv = np.random.default_rng(0).standard_normal((3, n))
    sol = prog.solve(zv, solver_args=TIGHT)
    p = np.exp(zv) / np.exp(zv).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(sol.values[0], p, atol=1e-9)
    jac = sol.jacobian()[0][0]
    for k in range(3):
        np.testing.assert_allclose(jac[k], np.diag(p[k]) - np.outer(p[k], p[k]), atol=1e-8)


def test_sigmoid_from_binary_entropy():
    n = 4
    z = cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Maximize(z @ x + cp.sum(cp.entr(x) + cp.entr(1 - x))))
    prog = dpplayers.compile(prob, [z], [x], solver="CLARABEL")
    zv = np.array([-2.0, -0.3, 0.7, 1.9])
    sol = prog.solve(zv, solver_args=TIGHT)
    sig = 1 / (1 + np.exp(-zv))
    np.testing.assert_allclose(sol.values[0], sig, atol=1e-9)
    np.testing.assert_allclose(sol.jacobian()[0][0], np.diag(sig * (1 - sig)), atol=1e-8)


def test_least_squares_and_its_gradients():
    m, n = 8, 3
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b))), [A, b], [x],
                             solver="CLARABEL")
    rng = np.random.default_rng(1)
    Av, bv = rng.standard_normal((m, n)), rng.standard_normal(m)
    sol = prog.solve(Av, bv, solver_args=TIGHT)
    xs = np.linalg.solve(Av.T @ Av, Av.T @ bv)
    np.testing.assert_allclose(sol.values[0], xs, atol=1e-9)
    w = rng.standard_normal(n)
    gA, gb = sol.vjp(w)
    # x = (AᵀA)⁻¹Aᵀb: ∂⟨w,x⟩/∂b = A(AᵀA)⁻¹w, ∂⟨w,x⟩/∂A = r qᵀ − A q xᵀ with q = (AᵀA)⁻¹w, r = b − Ax
    q = np.linalg.solve(Av.T @ Av, w)
    np.testing.assert_allclose(gb, Av @ q, atol=1e-8)
    np.testing.assert_allclose(gA, np.outer(bv - Av @ xs, q) - np.outer(Av @ q, xs), atol=1e-8)


@pytest.mark.parametrize("mode", ["direct", "dense", "lsqr"])
def test_degenerate_lp_is_finite_and_flagged(mode):
    """min c·x on the simplex with a tie: non-unique solution, singular J."""
    c = cp.Parameter(3)
    x = cp.Variable(3)
    prob = cp.Problem(cp.Minimize(c @ x), [x >= 0, cp.sum(x) == 1])
    prog = dpplayers.compile(prob, [c], [x], solver="CLARABEL")
    sol = prog.solve(np.array([1.0, 1.0, 2.0]), solver_args={"mode": mode})
    g, = sol.vjp(np.array([1.0, -1.0, 0.5]))
    assert np.all(np.isfinite(g))
    assert sol.degenerate[0]
