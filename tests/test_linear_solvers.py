"""Direct's exact singleton elimination: solves against dense LAPACK, the peeled pairs, a
singular J with two bound rows on one column, and vjp against finite differences."""

from types import SimpleNamespace

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

import dpplayers
from dpplayers._derivative import linear_solvers
from dpplayers._derivative.kkt import kkt_operator
from dpplayers._derivative.linear_solvers import Direct, _AntiDiagonalLU
from dpplayers.cones import ConeDims

TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "max_iter": 500}
REFINED = {**TIGHT, "refine": 3}  # Newton-polished: finite differences need exact vertices
#: Both factorisation paths: dense LAPACK (small cores) and SuperLU (dense_limit=0).
SOLVERS = [Direct(), Direct(dense_limit=0)]


def standard_lp(n=12, m=5, seed=0):
    """min cᵀx s.t. Ax = b, x ≥ 0 with values making basis S the unique, non-degenerate
    optimum: n − m variables sit on their bound."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    x, c, b = cp.Variable(n), cp.Parameter(n), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(c @ x), [A @ x == b, x >= 0])
    S = rng.permutation(n)[:m]
    x0 = np.zeros(n)
    x0[S] = rng.uniform(0.5, 1.5, m)
    s0 = rng.uniform(0.5, 1.5, n)
    s0[S] = 0.0
    return prob, (c, b), x, [A.T @ rng.standard_normal(m) + s0, A @ x0]


def box_qp(seed=0):
    """min ½xᵀQx + qᵀx s.t. 0 ≤ x ≤ 1, 1ᵀx = 2.5, x[0] = p: bounds active at both ends,
    a fixed variable, an equality row that is not a singleton."""
    n = 8
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    Q = M @ M.T / n + np.eye(n)
    x, q, p = cp.Variable(n), cp.Parameter(n), cp.Parameter()
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x),
                      [x >= 0, x <= 1, cp.sum(x) == 2.5, x[0] == p])
    q0 = 3.0 * np.array([0.0, -2.0, -2.0, 2.0, 2.0, 0.1, -0.1, 0.0])
    return prob, (q, p), x, [q0, np.array(0.4)]


def all_fixed():
    """min cᵀx s.t. x ≥ 0, x0 = p with c > 0: x = (p, 0, 0)."""
    x, c, p = cp.Variable(3), cp.Parameter(3), cp.Parameter()
    prob = cp.Problem(cp.Minimize(c @ x), [x >= 0, x[0] == p])
    return prob, (c, p), x, [np.array([1.0, 2.0, 3.0]), np.array(0.5)]


def operator_of(prob, params, x, values):
    """A KKTOperator built by ``kkt_operator`` at the solution, and its program."""
    prog = dpplayers.compile(prob, list(params), [x], solver="CLARABEL")
    sol = prog.solve(*values, solver_args=REFINED)
    assert sol.ok.all()
    P, A, _, _ = prog.element_data(sol._data, 0)
    return kkt_operator(P, A, sol.y[:, 0], sol.s[:, 0], prog.cones), prog, sol


def relative_error(z, ref):
    return np.linalg.norm(z - ref) / np.linalg.norm(ref)


CASES = {"lp": standard_lp, "lp_wide": lambda: standard_lp(30, 12, seed=3), "qp": box_qp}


@pytest.mark.parametrize("solver", SOLVERS, ids=["dense", "superlu"])
@pytest.mark.parametrize("name", list(CASES))
def test_solves_match_dense_lapack(name, solver):
    op, _, _ = operator_of(*CASES[name]())
    J = op.as_matrix().toarray()
    rhs = np.random.default_rng(1).standard_normal((J.shape[0], 3))
    state = solver.init(op)
    for transpose in (False, True):
        z, stats = solver.compute(state, rhs, transpose)
        ref = np.linalg.solve(J.T if transpose else J, rhs)
        assert relative_error(z, ref) <= 1e-10, (name, transpose)
        assert stats.converged and not stats.degenerate and not stats.fell_back
        assert stats.residual <= 1e-12


@pytest.mark.parametrize("name", list(CASES))
def test_transposed_operator(name):
    """Direct on op.T solves Jᵀ z = r as a plain system (the elimination flips)."""
    op, _, _ = operator_of(*CASES[name]())
    J = op.as_matrix().toarray()
    rhs = np.random.default_rng(2).standard_normal((J.shape[0], 2))
    solver = Direct(dense_limit=0)
    state = solver.init(op.T)
    for transpose, M in ((False, J.T), (True, J)):
        z, stats = solver.compute(state, rhs, transpose)
        assert relative_error(z, np.linalg.solve(M, rhs)) <= 1e-10
        assert not stats.degenerate  # not rescued by the LSMR fallback


@pytest.mark.parametrize("solver", SOLVERS, ids=["dense", "superlu"])
def test_lp_reduces_to_its_basis(solver):
    """Standard-form LP: the n − m bound pairs and m inactive bounds go, leaving
    [[0, Bᵀ], [B, 0]] of order 2m, solved with one LU of B."""
    n, m = 12, 5
    op, _, _ = operator_of(*standard_lp(n, m))
    state = solver.init(op)
    assert state.peel.lead_rows.size == n - m  # du_j = r / a on the bound rows
    assert state.peel.trail_rows.size == (n - m) + m  # dv of the bounds, and inactive rows
    before = op.in_size - int(np.sum(op.scalar_blocks() == 0.0))  # the old factorised order (2n)
    assert before == 2 * n and state.J_RR.shape[0] == 2 * m
    assert isinstance(state.lu, _AntiDiagonalLU)


def test_qp_peels_bounds_and_the_fixed_variable():
    op, _, sol = operator_of(*box_qp())
    x = sol.values[0]
    at_bound = int(np.sum((x < 1e-9) | (x > 1 - 1e-9)))
    assert 4 <= at_bound < x.size - 1  # both ends active, some free variables
    state = Direct(dense_limit=0).init(op)
    # one pair per variable on a bound and one for x[0] == p; the rest of the core is P's
    assert state.peel.lead_rows.size == at_bound + 1
    assert state.J_RR.shape[0] == op.in_size - int(np.sum(op.scalar_blocks() == 0.0)) - 2 * (at_bound + 1)
    assert not isinstance(state.lu, _AntiDiagonalLU)  # P ≠ 0: a general core


@pytest.mark.parametrize("solver", SOLVERS, ids=["dense", "superlu"])
def test_two_singleton_rows_on_one_column(solver):
    """x0 fixed by an equality and held by an active bound (y > 0): rows n and n+1 of J
    are both multiples of e_0ᵀ, so J is singular. One row is peeled, the other stays in the
    core; a consistent system is still solved exactly (flagged degenerate)."""
    A = sp.csc_matrix(np.array([
        [2.0, 0.0, 0.0, 0.0],    # zero cone: 2 x0 = b0 (D = 1)
        [-1.0, 0.0, 0.0, 0.0],   # nonneg: x0 ≥ 0, active with y > 0 (D = 1)
        [0.0, -1.0, 0.0, 0.0],   # nonneg: x1 ≥ 0, inactive (D = 0)
        [0.0, 1.0, 1.0, 1.0],    # nonneg: x1 + x2 + x3 ≤ h, active (D = 1)
    ]))
    P_upper = sp.csc_matrix(sp.triu(sp.diags([0.0, 2.0, 1.0, 3.0])))
    y = np.array([0.7, 1.3, 0.0, 0.4])
    s = np.array([0.0, 0.0, 0.8, 0.0])
    op = kkt_operator(P_upper, A, y, s, ConeDims(zero=1, nonneg=3))
    J = op.as_matrix().toarray()
    assert np.linalg.matrix_rank(J) == J.shape[0] - 1
    state = solver.init(op)
    assert state.peel.lead_rows.size == 1 and state.J_RR.shape[0] < J.shape[0] - 2
    rng = np.random.default_rng(3)
    for transpose in (False, True):
        M = J.T if transpose else J
        rhs = M @ rng.standard_normal((J.shape[0], 2))  # consistent
        z, stats = solver.compute(state, rhs, transpose)
        assert np.linalg.norm(M @ z - rhs) <= 1e-10 * np.linalg.norm(rhs)
        assert stats.degenerate


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dense mode, singular J
def test_duplicate_fixings_through_cvxpy():
    """The same variable fixed twice (x0 == p and 2 x0 == 2p) plus bounds: vjp still
    agrees with the dense mode on the non-singular directions."""
    n = 5
    x, q, p = cp.Variable(n), cp.Parameter(n), cp.Parameter()
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                      [x >= 0, x[0] == p, 2 * x[0] == 2 * p])
    values = [np.array([0.0, -1.0, 2.0, -0.5, 1.5]), np.array(0.3)]
    grads = {}
    for mode in ("direct", "dense"):
        prog = dpplayers.compile(prob, [q, p], [x], solver="CLARABEL", mode=mode)
        sol = prog.solve(*values, solver_args=REFINED)
        grads[mode] = sol.vjp(np.arange(1.0, n + 1))
        state = sol._derivative.element(0)[1]
        if mode == "direct":
            assert state.peel.lead_rows.size >= 1 + 2  # x0 (once), x2 and x4 at 0
    for a, b in zip(grads["direct"], grads["dense"]):
        np.testing.assert_allclose(a, b, atol=1e-8)


def _fd_check(prob, params, x, values, seed=0, eps=1e-5):
    prog = dpplayers.compile(prob, list(params), [x], solver="CLARABEL")
    sol = prog.solve(*values, solver_args=REFINED)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(x.shape)
    dirs = [rng.standard_normal(np.shape(v)) for v in values]
    grads = sol.vjp(w)
    lhs = sum(float(np.sum(g * d)) for g, d in zip(grads, dirs))
    plus = prog.solve(*[v + eps * d for v, d in zip(values, dirs)], solver_args=REFINED)
    minus = prog.solve(*[v - eps * d for v, d in zip(values, dirs)], solver_args=REFINED)
    rhs = float(np.sum(w * (plus.values[0] - minus.values[0]) / (2 * eps)))
    assert not sol.degenerate.any()
    assert abs(lhs - rhs) <= 1e-5 * max(1.0, abs(rhs)), (lhs, rhs)
    return sol


@pytest.mark.parametrize("name", list(CASES))
def test_vjp_matches_finite_differences(name):
    sol = _fd_check(*CASES[name]())
    assert sol._derivative.element(0)[1].peel.lead_rows.size > 0  # the elimination was exercised


@pytest.mark.parametrize("solver", SOLVERS, ids=["dense", "superlu"])
def test_everything_peeled(solver):
    """Every variable on a bound or fixed: the core is empty and the pivots are the solve."""
    op, _, _ = operator_of(*all_fixed())
    state = solver.init(op)
    assert state.J_RR.shape[0] == 0
    J = op.as_matrix().toarray()
    rhs = np.random.default_rng(4).standard_normal((J.shape[0], 2))
    for transpose in (False, True):
        z, stats = solver.compute(state, rhs, transpose)
        assert relative_error(z, np.linalg.solve(J.T if transpose else J, rhs)) <= 1e-12
        assert not stats.degenerate


def test_a_basis_that_fills_in_is_factorised_densely_from_then_on():
    """A dense-ish LP basis above the dense limit: SuperLU fills it in, the program
    remembers, and its next element's basis gets LAPACK's LU; both answers are exact."""
    n, m = 60, 30
    prob, params, x, values = standard_lp(n, m, seed=4)
    op, _, _ = operator_of(prob, params, x, values)
    solver = Direct(dense_limit=10)
    state = solver.init(op)
    assert isinstance(state.lu, _AntiDiagonalLU) and not state.lu.lu.dense
    assert op.pattern.plan.filled["basis"]  # a random dense B: fill ≥ DENSE_FRACTION of m²
    again = solver.init(op)  # the same program's pattern: now dense
    assert again.lu.lu.dense
    rng = np.random.default_rng(0)
    rhs = rng.standard_normal((op.in_size, 2))
    ref = np.linalg.solve(op.as_matrix().toarray(), rhs)
    for st in (state, again):
        z, stats = solver.compute(st, rhs, transpose=False)
        assert relative_error(z, ref) < 1e-10 and not stats.degenerate


@pytest.mark.parametrize("name", list(CASES))
def test_single_precision_lu_refines_to_double_accuracy(name, monkeypatch):
    """With every dense LU in single precision (MIXED_MIN_ORDER lowered from 500), the
    refined solves are as exact as the double ones, and the LU stays single."""
    monkeypatch.setattr(linear_solvers, "MIXED_MIN_ORDER", 1)
    op, _, _ = operator_of(*CASES[name]())
    J = op.as_matrix().toarray()
    rhs = np.random.default_rng(5).standard_normal((J.shape[0], 3))
    solver = Direct()
    state = solver.init(op)
    lu = state.lu.lu if isinstance(state.lu, _AntiDiagonalLU) else state.lu
    assert lu.single and lu.factor[0].dtype == np.float32
    for transpose in (False, True):
        z, stats = solver.compute(state, rhs, transpose)
        assert relative_error(z, np.linalg.solve(J.T if transpose else J, rhs)) <= 1e-10
        assert stats.residual <= 1e-12 and not stats.degenerate
    assert lu.single


@pytest.mark.parametrize("log_cond", [1, 10])
def test_single_precision_lu_is_redone_in_double_when_refinement_stalls(log_cond, monkeypatch):
    """cond(M) = 10: refinement from a single LU reaches double's residual; 1e10 (beyond
    1/eps_single): it cannot, the LU is redone in double and the answer is as exact as a
    double LU's (whose residual is then far above 1e-12 of the right-hand side too)."""
    monkeypatch.setattr(linear_solvers, "MIXED_MIN_ORDER", 1)
    rng = np.random.default_rng(6)
    U, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    V, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    M = U @ np.diag(np.logspace(0, -log_cond, 30)) @ V.T
    state = SimpleNamespace(J_RR=M, lu=linear_solvers.DenseLU(M), singular=False)
    rhs = rng.standard_normal((30, 2))
    for transpose in (False, True):
        A = M.T if transpose else M
        z, _ = Direct()._refined_solve(state, rhs, transpose)
        ref = np.linalg.solve(A, rhs)
        assert np.linalg.norm(A @ z - rhs) <= 10 * max(np.linalg.norm(A @ ref - rhs),
                                                       1e-14 * np.linalg.norm(rhs))
        assert relative_error(z, ref) <= 1e-14 * 10.0 ** log_cond
    assert state.lu.single == (log_cond == 1)
