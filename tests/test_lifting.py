"""Large SOC blocks lifted out of J (``dpplayers._derivative.lifting``): J̃'s Schur complement
is J exactly, each route that solves J̃ gives J's answer (to rounding), and the derivative of
a program with a large norm matches finite differences of refined solves."""

import dataclasses

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

import dpplayers
import dpplayers._derivative.batch as batch_module
from dpplayers._derivative import lifted_direct
from dpplayers._derivative.kkt import kkt_operator, kkt_pattern
from dpplayers._derivative.lifted_direct import LiftedDirect, lifted_operator
from dpplayers._derivative.lifting import LIFT_MIN_DIM
from dpplayers._derivative.linear_solvers import Direct
from dpplayers.cones import ConeDims, ProductCone

TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}
REFINED = {**TIGHT, "refine": 3}
SOCS = (40, 3, 32)  # two lifted (LIFT_MIN_DIM ≤ 32) and a small one


def _operator(region: str, seed: int = 0):
    """J at a random point of a program with two lifted SOCs (and a small one), each lifted
    cone's point in ``region``: the middle (neither the cone nor its polar), the cone's
    interior or the polar's."""
    rng = np.random.default_rng(seed)
    dims = ConeDims(zero=3, nonneg=5, soc=SOCS)
    m, n = dims.size, 12
    A = (sp.random(m, n, density=0.3, random_state=seed) + sp.eye(m, n)).tocsc()
    A.sort_indices()
    M = rng.standard_normal((n, n))
    P = sp.triu(sp.csc_matrix(M @ M.T * (rng.random((n, n)) < 0.3)), format="csc")
    cone = ProductCone.from_dims(dims, dual=True)
    v = rng.standard_normal(m)
    for start in (8, 8 + SOCS[0] + SOCS[1]):  # the lifted cones' t
        v[start] = {"middle": 0.3, "inside": 50.0, "polar": -50.0}[region]
    y = cone.project(v)
    return kkt_operator(P, A, y, y - v, dims, kkt_pattern(P, A, cone), cone), n + m


@pytest.mark.parametrize("region", ["middle", "inside", "polar"])
def test_lifted_J_has_J_as_its_schur_complement(region):
    op, N = _operator(region)
    assert op.pattern.lifted is not None and op.pattern.lifted.extra == 4  # two lifted SOCs
    J = op.as_matrix().toarray()
    for pattern in (op.pattern.lifted, op.pattern.batch_lifted):
        lifted = dataclasses.replace(lifted_operator(op), pattern=pattern)
        Jt = lifted.as_matrix().toarray()
        if pattern.position is not None:  # back to J̃'s own order
            Jt = Jt[np.ix_(pattern.position, pattern.position)]
        assert pattern.indices.size < op.pattern.indices.size  # the dense blocks are gone
        S = Jt[:N, :N] - Jt[:N, N:] @ np.linalg.solve(Jt[N:, N:], Jt[N:, :N])
        np.testing.assert_allclose(S, J, rtol=0, atol=1e-14)
        # the entries the batched solve reads are J̃'s, each once
        entries = pattern.entries(op.P_upper_data, op.A.data, pattern.d_values(op.D))
        dense = lifted.as_matrix().toarray()
        np.testing.assert_array_equal(entries, dense[pattern.entry_rows, pattern.entry_cols])


@pytest.mark.parametrize("region", ["middle", "inside", "polar"])
@pytest.mark.parametrize("transpose", [False, True])
def test_lifted_direct_solves_J(region, transpose):
    op, N = _operator(region, seed=3)
    rhs = np.random.default_rng(1).standard_normal((N, 2))
    want, want_stats = Direct().compute(Direct().init(op), rhs, transpose)
    solver = LiftedDirect(Direct())
    state = solver.init(op)
    got, stats = solver.compute(state, rhs, transpose)
    # inside the cones D = I there: 75 active rows on 12 variables make J singular, and the
    # answer is J's own minimum-norm one; elsewhere J̃ answers
    assert want_stats.degenerate == stats.degenerate == (region == "inside")
    assert (state.lifted is None) == (region == "inside")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    if region != "inside":
        J = op.as_matrix().toarray()
        np.testing.assert_allclose((J.T if transpose else J) @ got, rhs, atol=1e-11)


def test_lifted_direct_answers_a_singular_J_by_J_itself():
    """J̃'s minimum-norm answer is not J's: a degenerate element is solved on J, as before."""
    op, N = _operator("middle", seed=3)
    A = op.A.tolil()
    A[:, 0] = 0.0  # variable 0 meets no row (and P's column 0 is cleared): J is singular
    A = A.tocsc()
    A.eliminate_zeros()
    A.sort_indices()
    P = sp.csc_matrix(sp.triu(op.pattern.full_P(op.P_upper_data)).tolil())
    P[0, :] = 0.0
    P[:, 0] = 0.0
    P = sp.csc_matrix(P)
    P.eliminate_zeros()
    cone = ProductCone.from_dims(ConeDims(zero=3, nonneg=5, soc=SOCS), dual=True)
    y = cone.project(np.random.default_rng(0).standard_normal(N - 12))
    op = kkt_operator(P, A, y, y - np.random.default_rng(0).standard_normal(N - 12),
                      ConeDims(zero=3, nonneg=5, soc=SOCS), kkt_pattern(P, A, cone), cone)
    rhs = np.random.default_rng(2).standard_normal((N, 1))
    want, want_stats = Direct().compute(Direct().init(op), rhs, False)
    solver = LiftedDirect(Direct())
    state = solver.init(op)
    got, stats = solver.compute(state, rhs, False)
    assert want_stats.degenerate and stats.degenerate and state.plain is not None
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_lift_threshold():
    for d, lifted in ((LIFT_MIN_DIM - 1, False), (LIFT_MIN_DIM, True)):
        dims = ConeDims(soc=(d,))
        A = sp.csc_matrix(sp.random(d, 4, density=0.5, random_state=0) + sp.eye(d, 4))
        pattern = kkt_pattern(None, A, ProductCone.from_dims(dims, dual=True))
        assert (pattern.lifted is not None) == lifted


def _norm_lasso(m: int = 70, n: int = 12):
    """‖F x − g‖₂ + λ‖x‖₁: one SOC of dimension m + 1 and inactive rows (x_j ≠ 0)."""
    x = cp.Variable(n)
    F, g = cp.Parameter((m, n)), cp.Parameter(m)
    lam = cp.Parameter(nonneg=True)
    prob = cp.Problem(cp.Minimize(cp.norm(F @ x - g, 2) + lam * cp.norm1(x)))

    def values(rng, B):
        Fv = rng.standard_normal((B, m, n)) / np.sqrt(m)
        xt = rng.standard_normal((B, n)) * (rng.uniform(size=(B, n)) < 0.4)
        return [Fv, np.einsum("bij,bj->bi", Fv, xt) + 0.1 * rng.standard_normal((B, m)),
                np.full(B, 0.05)]
    return prob, [F, g, lam], x, values


def _unlifted(prog):
    """The program with J's own pattern (the path before lifting)."""
    pattern = prog.kkt_pattern
    prog.__dict__["kkt_pattern"] = dataclasses.replace(pattern, lifted=None, batch_lifted=None)


def _vjp_again(sol, cot):
    for k in ("_derivative", "_chain"):
        sol.__dict__.pop(k, None)
    sol.stats[:] = [None] * len(sol.stats)
    return sol.vjp(cot)


@pytest.mark.parametrize("route", ["batched", "per element"])
def test_norm_lasso_gradients_equal_the_unlifted_path_and_finite_differences(route,
                                                                              monkeypatch):
    prob, params, x, values = _norm_lasso()
    prog = dpplayers.compile(prob, params, [x], solver="CLARABEL")  # values unset
    assert prog.kkt_pattern.lifted is not None
    if route == "per element":  # every element by LiftedDirect
        monkeypatch.setattr(batch_module.BatchDerivative, "batched_dense", False)
    calls = []
    real = lifted_direct.lifted_operator
    monkeypatch.setattr(lifted_direct, "lifted_operator",
                        lambda op: calls.append(1) or real(op))
    rng = np.random.default_rng(0)
    for point in range(2):  # two parameter points, batch of 2
        vals = values(rng, 2)
        sol = prog.solve(*vals, solver_args=TIGHT)
        cot = rng.standard_normal(sol.values[0].shape)
        lifted = sol.vjp(cot)
        # the same solution through J itself: equal to rounding
        saved = prog.kkt_pattern
        _unlifted(prog)
        try:
            plain = _vjp_again(sol, cot)
        finally:
            prog.__dict__["kkt_pattern"] = saved
        for a, b in zip(lifted, plain):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)
        # finite differences of refined solves, along a random direction
        dirs = [rng.standard_normal(v.shape) for v in vals[:2]] + [np.zeros(2)]
        eps = 1e-5
        plus = prog.solve(*[v + eps * d for v, d in zip(vals, dirs)], solver_args=REFINED)
        minus = prog.solve(*[v - eps * d for v, d in zip(vals, dirs)], solver_args=REFINED)
        fd = float(np.sum(cot * (plus.values[0] - minus.values[0]) / (2 * eps)))
        lhs = sum(float(np.sum(g * d)) for g, d in zip(lifted, dirs))
        assert abs(lhs - fd) <= 1e-4 * max(1.0, abs(fd)), (point, lhs, fd)
    assert bool(calls) == (route == "per element")


def test_norm_lasso_matches_cvxpy_solution():
    """The forward pass is untouched: the solution is CVXPY's."""
    prob, params, x, values = _norm_lasso()
    prog = dpplayers.compile(prob, params, [x], solver="CLARABEL")
    vals = values(np.random.default_rng(5), 1)
    got = prog.solve(*vals, solver_args=TIGHT).values[0][0]
    for p, v in zip(params, vals):
        p.value = v[0]
    prob.solve(solver=cp.CLARABEL, **TIGHT)
    np.testing.assert_allclose(got, x.value, atol=1e-6)


def test_a_point_inside_the_cone_is_handed_to_direct_and_exact(monkeypatch):
    """min ‖F x − g‖₂ with F square: x = F⁻¹ g, the residual is 0 and the cone's dual
    (1, 0) lies inside it, so DΠ = I there and the lifted rows' diagonal g − 1 is 0: the
    batched solve cannot divide them out, and Direct answers (on J̃, exactly). The closed
    form: ∂x/∂g = F⁻¹, so the vjp of w is F⁻ᵀ w."""
    n = LIFT_MIN_DIM + 1
    rng = np.random.default_rng(3)
    F = rng.standard_normal((n, n)) + n * np.eye(n)
    x, g = cp.Variable(n), cp.Parameter(n)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.norm(F @ x - g, 2))), [g], [x],
                             solver="CLARABEL")
    assert prog.kkt_pattern.batch_lifted is not None
    calls = []
    real = lifted_direct.lifted_operator
    monkeypatch.setattr(lifted_direct, "lifted_operator",
                        lambda op: calls.append(1) or real(op))
    for point in range(2):
        gv = rng.standard_normal((2, n))
        sol = prog.solve(gv, solver_args=TIGHT)
        np.testing.assert_allclose(sol.values[0], np.linalg.solve(F, gv.T).T, atol=1e-7)
        w = rng.standard_normal((2, n))
        (got,) = sol.vjp(w)
        np.testing.assert_allclose(got, np.linalg.solve(F.T, w.T).T, rtol=1e-6, atol=1e-7)
    assert calls  # the batched solve handed the elements on
