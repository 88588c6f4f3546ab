"""vjp, jvp and jacobian: finite differences, the dot-product test, jacobian = stacked jvp."""

from types import SimpleNamespace

import cvxpy
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import CASES, names

import dpplayers
import dpplayers._derivative.batch as batch_module
import dpplayers._derivative.plan as plan_module
from dpplayers._derivative.inactive_rows import InactiveRows

TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "max_iter": 500}
#: Finite differences need solutions accurate far beyond the step: Newton-polish them.
REFINED = {**TIGHT, "refine": 3}
SMOOTH = names(smooth_only=True)
MODES = ["direct", "lsqr", "lsmr", "dense"]
#: One representative per family for the CI run; every case × mode under RUN_SLOW=1.
REPRESENTATIVE = ["lp_box", "qp_quad_form_constant", "socp_ball_linear", "sdp_psd_variable",
                  "exp_softmax", "pow_power_1_5", "dual_equality_inequality", "gp_box_volume"]


def compiled(name):
    case = CASES[name]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables, solver="CLARABEL",
                             gp=case.gp)
    return case, prog


def direction(param, rng):
    """A random tangent that keeps the parameter's declared structure (symmetric...)."""
    d = rng.standard_normal(param.shape)
    if param.attributes.get("symmetric") or param.attributes.get("PSD"):
        d = (d + d.T) / 2
    return d


def fd_directional(prog, values, dirs, eps, args):
    plus = prog.solve(*[v + eps * d for v, d in zip(values, dirs)], solver_args=args).values
    minus = prog.solve(*[v - eps * d for v, d in zip(values, dirs)], solver_args=args).values
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def check_vjp_against_fd(name, mode, seed=0):
    case, prog = compiled(name)
    rng = np.random.default_rng(seed)
    values = case.sample(rng)
    sol = prog.solve(*values, solver_args={**TIGHT, "mode": mode})
    dirs = [direction(p, rng) for p in case.parameters]
    ws = [rng.standard_normal(v.shape) for v in sol.values]
    grads = sol.vjp(*ws)
    lhs = sum(float(np.sum(g * d)) for g, d in zip(grads, dirs))
    fd = fd_directional(prog, values, dirs, 1e-5, REFINED)
    rhs = sum(float(np.sum(w * f)) for w, f in zip(ws, fd))
    scale = max(1.0, abs(rhs))
    assert abs(lhs - rhs) <= 1e-4 * scale, (name, mode, lhs, rhs)
    return sol


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_vjp_matches_finite_differences(name, mode):
    check_vjp_against_fd(name, mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", [n for n in SMOOTH if n not in REPRESENTATIVE])
def test_vjp_matches_finite_differences_all(name, mode):
    check_vjp_against_fd(name, mode)


@pytest.mark.parametrize("name, reads_y", [("socp_norm_residual", False),
                                           ("dual_equality_inequality", True)])
def test_vjp_applies_dpi_to_y_only_where_an_output_reads_y(name, reads_y, monkeypatch):
    """R reads y only for dual outputs: otherwise the cotangent on y is zero and DΠ of it
    is skipped, and either way the vjp agrees with finite differences."""
    _, prog = compiled(name)
    assert (prog.retrieval.last_column >= prog.n) == reads_y
    calls = []
    original = batch_module.BatchDerivative.apply_projection
    monkeypatch.setattr(batch_module.BatchDerivative, "apply_projection",
                        lambda self, *a: calls.append(1) or original(self, *a))
    check_vjp_against_fd(name, "direct")
    assert bool(calls) == reads_y


@pytest.mark.parametrize("name", SMOOTH)
def test_dot_product_jvp_vjp(name):
    """⟨w, J u⟩ = ⟨Jᵀ w, u⟩ to 1e-8, batched."""
    case, prog = compiled(name)
    rng = np.random.default_rng(1)
    samples = [case.sample(rng) for _ in range(2)]
    values = [np.stack(v) for v in zip(*samples)]
    sol = prog.solve(*values, solver_args=TIGHT)
    us = [np.stack([direction(p, rng) for _ in range(2)]) for p in case.parameters]
    ws = [rng.standard_normal(v.shape) for v in sol.values]
    Ju = sol.jvp(*us)
    JTw = sol.vjp(*ws)
    lhs = sum(float(np.sum(w * j)) for w, j in zip(ws, Ju))
    rhs = sum(float(np.sum(g * u)) for g, u in zip(JTw, us))
    assert abs(lhs - rhs) <= 1e-8 * max(1.0, abs(lhs)), (lhs, rhs)


@pytest.mark.parametrize("name", SMOOTH)
def test_jacobian_equals_stacked_jvp(name):
    case, prog = compiled(name)
    values = case.sample(np.random.default_rng(2))
    sol = prog.solve(*values, solver_args=TIGHT)
    jac = sol.jacobian()
    for j, p in enumerate(case.parameters):
        for flat in range(min(p.size, 6)):
            e = np.zeros(p.size)
            e[flat] = 1.0
            tangents = [None] * len(case.parameters)
            tangents[j] = e.reshape(p.shape, order="F")
            outs = sol.jvp(*tangents)
            idx = np.unravel_index(flat, p.shape, order="F")
            for i, out in enumerate(outs):
                got = jac[i][j][(Ellipsis, *idx)] if p.shape else jac[i][j]
                np.testing.assert_allclose(got, out, rtol=1e-9, atol=1e-10)


def test_jacobian_batched_shapes():
    case, prog = compiled("dual_equality_inequality")
    rng = np.random.default_rng(3)
    values = [np.stack(v) for v in zip(*[case.sample(rng) for _ in range(3)])]
    jac = prog.solve(*values, solver_args=TIGHT).jacobian()
    for i, v in enumerate(case.variables):
        for j, p in enumerate(case.parameters):
            assert jac[i][j].shape == (3, *v.shape, *p.shape)


@pytest.mark.parametrize("batch", [None, 3])
def test_vjp_sums_cotangents_of_an_output_requested_twice(batch):
    """Rᵀ g where two rows of R pick the same entry of z (the same matrix variable asked
    for twice) adds their cotangents; each matrix output's entries keep their places."""
    X = cvxpy.Variable((3, 2))
    A = cvxpy.Parameter((3, 2))
    problem = cvxpy.Problem(cvxpy.Minimize(cvxpy.sum_squares(X - A) + cvxpy.sum(X)),
                            [X >= -0.5])
    once = dpplayers.compile(problem, [A], [X], solver="CLARABEL")
    twice = dpplayers.compile(problem, [A], [X, X], solver="CLARABEL")
    rng = np.random.default_rng(5)
    shape = (3, 2) if batch is None else (batch, 3, 2)
    a = rng.standard_normal(shape)
    w1, w2 = rng.standard_normal(shape), rng.standard_normal(shape)
    (g_twice,) = twice.solve(a, solver_args=TIGHT).vjp(w1, w2)
    (g_once,) = once.solve(a, solver_args=TIGHT).vjp(w1 + w2)
    np.testing.assert_allclose(g_twice, g_once, rtol=1e-9, atol=1e-12)
    # the objective is separable: dX_ij/dA_ij is 1 where X_ij > -0.5, else 0
    X_value = once.solve(a, solver_args=TIGHT).values[0]
    np.testing.assert_allclose(g_once, (w1 + w2) * (X_value > -0.5 + 1e-6), atol=1e-7)


def test_derivative_stats_reported():
    case, prog = compiled("qp_quad_form_constant")
    sol = prog.solve(*case.sample(np.random.default_rng(4)), solver_args={**TIGHT, "mode": "lsqr"})
    sol.vjp(np.ones(4))
    assert sol.residual[0] < 1e-6 and not sol.fell_back[0] and not sol.degenerate[0]


def test_lsqr_stall_falls_back_to_direct():
    case, prog = compiled("qp_quad_form_constant")
    values = case.sample(np.random.default_rng(5))
    sol = prog.solve(*values, solver_args={**TIGHT, "mode": "lsqr", "iter_lim": 1})
    ref = prog.solve(*values, solver_args={**TIGHT, "mode": "direct"})
    g, = sol.vjp(np.ones(4))[:1]
    np.testing.assert_allclose(g, ref.vjp(np.ones(4))[0], rtol=1e-8, atol=1e-10)
    assert sol.fell_back[0]


@pytest.mark.parametrize("name", ["lp_box", "gp_box_volume", "dual_psd", "exp_log_barrier"])
def test_jacobian_routes_agree(name):
    """The reverse (Jᵀ, one column per output) and forward (J, one per parameter) routes."""
    case, prog = compiled(name)
    rng = np.random.default_rng(6)
    values = [np.stack(v) for v in zip(*[case.sample(rng) for _ in range(2)])]
    sol = prog.solve(*values, solver_args=TIGHT)
    np.testing.assert_allclose(sol._reverse_jacobian(), sol._forward_jacobian(), rtol=1e-8,
                               atol=1e-10)


def assert_matches_dense_per_element(prog, samples, w, dirs, grads, tangents, jac):
    """Each element's batched vjp, jvp and jacobian equal the dense mode's on it alone."""
    for k, values in enumerate(samples):
        one = prog.solve(*values, solver_args={**TIGHT, "mode": "dense"})
        for g_batch, g_one in zip(grads, one.vjp(w[k])):
            np.testing.assert_allclose(g_batch[k], g_one, rtol=1e-9, atol=1e-11)
        for t_batch, t_one in zip(tangents, one.jvp(*[d[k] for d in dirs])):
            np.testing.assert_allclose(t_batch[k], t_one, rtol=1e-9, atol=1e-11)
        for row_batch, row_one in zip(jac, one.jacobian()):
            for j_batch, j_one in zip(row_batch, row_one):
                np.testing.assert_allclose(j_batch[k], j_one, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name, pairs", [
    ("qp_quad_form_constant", False), ("qp_box_projection", True), ("qp_ridge", True),
    ("socp_norm_residual", False), ("sdp_nearest_correlation", True)])
def test_batched_dense_solve_matches_element_by_element(name, pairs):
    """Small J of a batch are solved together (DenseBatch, with cvxpy's sum_squares
    auxiliaries eliminated as 2×2 pivots where there are any); each element must get exactly
    what the dense mode's own LU of its whole J gives, for vjp, jvp and jacobian."""
    case, prog = compiled(name)
    assert (prog.kkt_pattern.plan.pairs.q.size > 0) == pairs
    rng = np.random.default_rng(3)
    samples = [case.sample(rng) for _ in range(5)]
    batch = [np.stack(v) for v in zip(*samples)]
    sol = prog.solve(*batch, solver_args=TIGHT)
    w = rng.standard_normal(sol.values[0].shape)
    dirs = [np.stack([direction(p, rng) for _ in range(5)]) for p in case.parameters]
    grads, tangents, jac = sol.vjp(w), sol.jvp(*dirs), sol.jacobian()
    assert not sol._derivative.factors  # the batched path answered: no per-element factorisation
    assert_matches_dense_per_element(prog, samples, w, dirs, grads, tangents, jac)


@pytest.mark.parametrize("name", ["qp_box_projection", "lp_box", "qp_ridge_box"])
def test_batched_dense_solve_drops_inactive_rows(name, monkeypatch):
    """With J too large for the batched solve until each element's inactive inequality rows
    are dropped (DenseBatch's limit lowered to make these small problems so), the batch is
    still solved together, and each element gets what the dense mode's own LU of its whole
    J gives, for vjp (Jᵀ: the dropped unknowns lead), jvp and jacobian (J: they trail)."""
    case, prog = (compiled(name) if name in CASES else _ridge_box())
    pattern = prog.kkt_pattern
    assert pattern.plan.inactive is not None
    for limit in ("DENSE_ORDER", "MIXED_MIN_ORDER"):
        monkeypatch.setattr(plan_module, limit, pattern.plan.pairs.reduced_order - 1)
    rng = np.random.default_rng(4)
    samples = [case.sample(rng) for _ in range(5)]
    batch = [np.stack(v) for v in zip(*samples)]
    sol = prog.solve(*batch, solver_args=TIGHT)
    calls = []
    original = InactiveRows.solve
    monkeypatch.setattr(InactiveRows, "solve",
                        lambda self, *a: calls.append(a[-1].sum()) or original(self, *a))
    w = rng.standard_normal(sol.values[0].shape)
    dirs = [np.stack([direction(p, rng) for _ in range(5)]) for p in case.parameters]
    grads, tangents, jac = sol.vjp(w), sol.jvp(*dirs), sol.jacobian()
    assert not sol._derivative.factors and calls and min(calls) > 0  # batched, with rows dropped
    assert_matches_dense_per_element(prog, samples, w, dirs, grads, tangents, jac)


@pytest.mark.parametrize("transpose", [False, True])
def test_dropping_inactive_rows_is_exact_for_any_right_hand_side(transpose, monkeypatch):
    """The eliminated unknowns of the dropped rows, for right-hand sides that are not zero
    there (vjp's never are: DΠ zeroes them), against a dense solve with each element's J."""
    case, prog = _ridge_box()
    monkeypatch.setattr(plan_module, "DENSE_ORDER",
                        prog.kkt_pattern.plan.pairs.reduced_order - 1)
    monkeypatch.setattr(plan_module, "MIXED_MIN_ORDER",
                        prog.kkt_pattern.plan.pairs.reduced_order - 1)
    rng = np.random.default_rng(5)
    sol = prog.solve(*[np.stack(v) for v in zip(*[case.sample(rng) for _ in range(4)])],
                     solver_args=TIGHT)
    (_, build), = sol._derivative.dense_batches(list(range(4)))
    batch = build()
    assert batch.drop is not None and batch.drop.sum(axis=1).min() > 0
    pattern, N = prog.kkt_pattern, prog.n + prog.m
    rhs = rng.standard_normal((4, N, 2))
    z, residual = batch.solve(rhs, transpose)
    for k in range(4):
        J = sp.csc_array((batch.values[k].take(pattern.to_csc), pattern.indices, pattern.indptr),
                         shape=(N, N))
        M = J.toarray().T if transpose else J.toarray()
        np.testing.assert_allclose(z[k], np.linalg.solve(M, rhs[k]), rtol=1e-9, atol=1e-11)
    assert residual.max() < 1e-12


def _ridge_box():
    """Ridge regression in a box: sum_squares auxiliaries (pairs) and inequalities that are
    active for some elements and not others."""
    A, b = cvxpy.Parameter((8, 4)), cvxpy.Parameter(8)
    x = cvxpy.Variable(4)
    prob = cvxpy.Problem(cvxpy.Minimize(cvxpy.sum_squares(A @ x - b) + 0.1 * cvxpy.sum_squares(x)),
                         [x <= 0.5, x >= -0.5])
    case = SimpleNamespace(parameters=[A, b], sample=lambda rng: [rng.standard_normal((8, 4)),
                                                                   3 * rng.standard_normal(8)])
    return case, dpplayers.compile(prob, [A, b], [x], solver="CLARABEL")


def test_elements_whose_active_rows_stay_too_many_go_to_direct(monkeypatch):
    """A batch where one element's J, less its inactive rows, fits the batched solve and the
    other's does not: only the second is factorised alone, and both are exact."""
    case, prog = compiled("qp_box_projection")
    order = prog.kkt_pattern.plan.pairs.reduced_order  # x, and the 2n bound rows
    n = case.parameters[0].shape[0]
    monkeypatch.setattr(plan_module, "DENSE_ORDER", order - n - 1)
    monkeypatch.setattr(plan_module, "MIXED_MIN_ORDER", order - n - 1)
    ys = np.stack([np.full(n, 0.1), np.full(n, 3.0)])  # all bounds inactive / half active
    sol = prog.solve(ys, solver_args=TIGHT)
    w = np.random.default_rng(0).standard_normal((2, n))
    g, = sol.vjp(w)
    assert set(sol._derivative.factors) == {1}
    np.testing.assert_allclose(g[0], w[0], atol=1e-9)  # x = y inside the box
    np.testing.assert_allclose(g[1], 0.0, atol=1e-9)  # x = 1 on the bound


def test_batched_dense_solve_hands_singular_elements_to_direct():
    """A degenerate element in a batch (singular J) falls back to Direct and is flagged;
    its neighbours keep the batched answer."""
    c = cvxpy.Parameter(3)
    x = cvxpy.Variable(3)
    prob = cvxpy.Problem(cvxpy.Minimize(c @ x), [x >= 0, cvxpy.sum(x) == 1])
    prog = dpplayers.compile(prob, [c], [x], solver="CLARABEL")
    cs = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 2.0], [3.0, 1.0, 2.0]])  # the middle one ties
    sol = prog.solve(cs, solver_args=TIGHT)
    g, = sol.vjp(np.array([[1.0, -1.0, 0.5]] * 3))
    assert np.all(np.isfinite(g))
    assert list(sol.degenerate) == [False, True, False]
    assert set(sol._derivative.factors) == {1}  # only the degenerate element was factorised alone



def socp_projection(n=20, k=6):
    """Euclidean projection onto {x : ‖A x + b‖ ≤ cᵀx + d}, large enough that the batched
    solve eliminates x as S's diagonal pivots (``PairPivots.diagonal``). Not in the shared
    zoo: SCS does not reach the 1e-12 the layers' gradchecks need on it."""
    y, A, b, c, d = (cvxpy.Parameter(n), cvxpy.Parameter((k, n)), cvxpy.Parameter(k),
                     cvxpy.Parameter(n), cvxpy.Parameter())
    x = cvxpy.Variable(n)
    prob = cvxpy.Problem(cvxpy.Minimize(cvxpy.sum_squares(x - y)),
                         [cvxpy.norm(A @ x + b, 2) <= c @ x + d])

    def sample(rng):
        # x = 0 is strictly feasible; with a small c the set is nearly the slab ‖A x + b‖ ≤ d,
        # which y (‖A y + b‖ ≈ 13) is outside of: the cone constraint is active, away from
        # the cone's apex
        b_val = rng.standard_normal(k)
        return [3 * rng.standard_normal(n), rng.standard_normal((k, n)), b_val,
                0.1 * rng.standard_normal(n), np.array(np.linalg.norm(b_val) + 0.5)]

    prog = dpplayers.compile(prob, [y, A, b, c, d], [x], solver="CLARABEL")
    return prog, sample


def test_diagonal_pivots_of_a_projection_match_finite_differences_and_dense():
    """The batched solve eliminates a projection's x as S's diagonal pivots before its LU:
    the vjp matches finite differences and the dense mode's, element by element, with no
    element handed to ``Direct``."""
    prog, sample = socp_projection()
    assert prog.kkt_pattern.plan.pairs.diagonal == 20
    rng = np.random.default_rng(3)
    values = sample(rng)
    sol = prog.solve(*values, solver_args=TIGHT)
    dirs = [rng.standard_normal(np.shape(v)) for v in values]
    w = rng.standard_normal(20)
    lhs = sum(float(np.sum(g * d)) for g, d in zip(sol.vjp(w), dirs))
    rhs = float(np.sum(w * fd_directional(prog, values, dirs, 1e-5, REFINED)[0]))
    assert abs(lhs - rhs) <= 1e-6 * max(1.0, abs(rhs)), (lhs, rhs)
    samples = [sample(rng) for _ in range(3)]
    batch = [np.stack(v) for v in zip(*samples)]
    W = rng.standard_normal((3, 20))
    direct = prog.solve(*batch)  # the same solution twice (default tolerances)
    dense = prog.solve(*batch, solver_args={"mode": "dense"})
    for g, h in zip(direct.vjp(W), dense.vjp(W)):
        np.testing.assert_allclose(g, h, rtol=1e-8, atol=1e-10)
    assert not direct._derivative.factors and not sol._derivative.factors  # no element went to Direct


def test_a_singular_element_of_a_dense_batch_reports_an_infinite_residual():
    """An element whose pair pivots are singular (zeroed couplings: det = 0) comes back
    with an infinite residual, for Direct to redo; the others are solved to rounding."""
    from dpplayers._derivative.pair_pivots import PQ, QP

    prog, sample = socp_projection()
    rng = np.random.default_rng(6)
    sol = prog.solve(*[np.stack(v) for v in zip(*[sample(rng) for _ in range(3)])])
    (_, build), = sol._derivative.dense_batches([0, 1, 2])
    batch = build()
    kind = prog.kkt_pattern.plan.pairs.kind
    values = batch.values.copy()
    values[1, (kind == PQ) | (kind == QP)] = 0.0
    broken = type(batch)(batch.pattern, values, batch.drop)
    rhs = rng.standard_normal((3, prog.n + prog.m, 2))
    for transpose in (False, True):
        _, residual = broken.solve(rhs, transpose)
        assert residual[1] == np.inf
        assert residual[[0, 2]].max() < 1e-12
