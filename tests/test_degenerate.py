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
import warnings

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
import dpplayers._derivative.plan as plan_module

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


def _fixed_with_inactive_bounds():
    """min ‖x‖² s.t. x = p, x ≤ p + 1: the pairs take every variable and equality, the
    rest is the inequality rows alone, all inactive: dropped, S is 0 × 0 per element."""
    p, x = cp.Parameter(3), cp.Variable(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x)), [x == p, x <= p + 1])
    return prob, [p], x, lambda rng: [rng.standard_normal(3)]


EDGE_PROBLEMS = {f.__name__[1:]: f for f in [_equality_only_matrix, _fixed_by_parameter,
                                              _fixed_linear, _box_lp, _soc_only,
                                              _inactive_only, _fixed_with_inactive_bounds]}


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


#: (mode, route): the batched dense solve (the default for these small J); the batched
#: solve of only the elements whose inactive rows it drops (its size limit lowered just
#: below the order without dropping), ``Direct`` for the others; or ``Direct`` for every
#: element (the limit below any J).
ROUTES = [("direct", "batched"), ("direct", "dropping"), ("direct", "per_element"),
          ("dense", ""), ("lsqr", ""), ("lsmr", "")]


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("mode, route", ROUTES, ids=lambda r: r)
@pytest.mark.parametrize("name", list(EDGE_PROBLEMS))
def test_every_elimination_route_matches_finite_differences(name, mode, route, batch,
                                                             monkeypatch):
    """vjp, jvp and jacobian() agree with CVXPY finite differences; no crash, no flag."""
    points, jacobians = _oracle(name)
    prob, params, x, _ = EDGE_PROBLEMS[name]()
    prog = dpplayers.compile(prob, params, [x], solver="CLARABEL")
    if route == "per_element":
        monkeypatch.setattr(plan_module, "DENSE_ORDER", -1)
        monkeypatch.setattr(plan_module, "MIXED_MIN_ORDER", -1)
    if route == "dropping":
        order = prog.kkt_pattern.plan.pairs.reduced_order
        monkeypatch.setattr(plan_module, "DENSE_ORDER", order - 1)
        monkeypatch.setattr(plan_module, "MIXED_MIN_ORDER", order - 1)
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


# -- item 5: non-unique canonical solutions, near-singular J -------------------------------

TIED_ORDER, TIED_K = 4, 2


def _tied_matrix() -> np.ndarray:
    """A fixed symmetric A0 with eigenvalues (3, 3, 0, −1): its top two are tied."""
    Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((TIED_ORDER, TIED_ORDER)))
    A0 = Q @ np.diag([3.0, 3.0, 0.0, -1.0]) @ Q.T
    return (A0 + A0.T) / 2


def _tied_problem():
    """min λ_sum_largest(A0 + diag(w), 2) + ½‖w − p‖². The map p ↦ w is smooth where
    λ2 > λ3, but cvxpy's canonical form k·t + tr Z has its t free on [λ3, λ2]: J is
    singular at every solution, nearly so at an interior point's."""
    w, p = cp.Variable(TIED_ORDER), cp.Parameter(TIED_ORDER)
    objective = cp.lambda_sum_largest(_tied_matrix() + cp.diag(w), TIED_K)
    prob = cp.Problem(cp.Minimize(objective + 0.5 * cp.sum_squares(w - p)))
    return prob, p, w


def _top_projector_derivative(w: np.ndarray, A0: np.ndarray, p: np.ndarray):
    """g(w) = diag(Π(w)) + w − p (the optimality condition; Π the projector onto the top-k
    eigenvectors of A0 + diag(w)) and its Jacobian I + L, L from the projector's first-order
    perturbation, Σ over top i and other j of 2 u_ai u_aj u_bi u_bj / (λ_i − λ_j)."""
    lam, U = np.linalg.eigh(A0 + np.diag(w))
    top, rest = U[:, -TIED_K:], U[:, :-TIED_K]
    gap = lam[-TIED_K:][:, None] - lam[:-TIED_K][None, :]
    L = np.einsum("ai,aj,bi,bj,ij->ab", top, rest, top, rest, 2.0 / gap)
    return np.diag(top @ top.T) + w - p, np.eye(w.size) + L


def _closed_form(p: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w, dw/dp) from Newton's method on the optimality condition, started at a solver's
    w; dw/dp = (I + L)⁻¹ by the implicit function theorem. Independent of any cone solver."""
    A0, w = _tied_matrix(), start.copy()
    for _ in range(30):
        g, Jg = _top_projector_derivative(w, A0, p)
        w = w - np.linalg.solve(Jg, g)
    g, Jg = _top_projector_derivative(w, A0, p)
    assert np.abs(g).max() < 1e-13
    return w, np.linalg.inv(Jg)


TIED_POINTS = [np.zeros(TIED_ORDER), np.array([0.3, -0.2, 0.1, 0.25])]
SOLVER_ARGS = {"CLARABEL": {}, "SCS": {"eps": 1e-10}}


@pytest.mark.parametrize("batch", [None, 2])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("solver", ["CLARABEL", "SCS"])
def test_non_unique_solution_is_flagged_and_differentiated_by_minimum_norm(solver, mode, batch):
    """Clarabel returns the centre of t's segment (cond J 1e10 to 1e13): the LU succeeded,
    the residual passed and jvp was off by 2–4% with degenerate False. Now: flagged, and
    jvp/vjp match the closed-form derivative (to the solver's accuracy in w) at both
    points; SCS's solution (J singular to rounding) likewise."""
    prob, p, w = _tied_problem()
    prog = dpplayers.compile(prob, [p], [w], solver=solver)
    rng = np.random.default_rng(2)
    points = TIED_POINTS if batch else TIED_POINTS[1:]
    values = np.stack(points) if batch else points[0]
    sol = prog.solve(values, solver_args={**SOLVER_ARGS[solver], "mode": mode})
    dp = rng.standard_normal(values.shape)
    dw_out = rng.standard_normal(values.shape)
    tangent, = sol.jvp(dp)
    grad, = sol.vjp(dw_out)
    assert sol.degenerate.all()  # known once a derivative was asked for
    for i, point in enumerate(points):
        at = (i,) if batch else ()
        w_exact, dw_dp = _closed_form(point, np.atleast_2d(sol.values[0])[i])
        accuracy = max(np.abs(np.atleast_2d(sol.values[0])[i] - w_exact).max(), 1e-9)
        np.testing.assert_allclose(tangent[at], dw_dp @ dp[at], atol=100 * accuracy)
        np.testing.assert_allclose(grad[at], dw_dp.T @ dw_out[at], atol=100 * accuracy)


def test_flagged_answer_is_the_truncated_minimum_norm_least_squares_solution():
    """At Clarabel's solution, every route's answer to J z = r and Jᵀ z = r (r random, so
    inconsistent) is numpy's lstsq with singular values below σ_max / CONDITION_LIMIT
    dropped; the batched solve refuses the element (infinite residual) for Direct."""
    from dpplayers._derivative.conditioning import CONDITION_LIMIT
    from dpplayers._derivative.linear_solvers import LSMR, LSQR, Dense, Direct

    prob, p, w = _tied_problem()
    prog = dpplayers.compile(prob, [p], [w], solver="CLARABEL")
    sol = prog.solve(TIED_POINTS[1])
    op = sol._derivative.element(0)[2]
    J = op.as_matrix().toarray()
    sigma = np.linalg.svd(J, compute_uv=False)
    assert 1e9 < sigma[0] / sigma[-1] and sigma[-2] / sigma[0] > 1e-3  # one tiny singular value
    rhs = np.random.default_rng(4).standard_normal((J.shape[0], 2))
    (_, build), = sol._derivative.dense_batches([0])
    batch = build()
    for transpose in (False, True):
        M = J.T if transpose else J
        ref = np.linalg.lstsq(M, rhs, rcond=1 / CONDITION_LIMIT)[0]
        for solver in (Direct(), Direct(dense_limit=0), Dense(), LSQR(), LSMR()):
            z, stats = solver.compute(solver.init(op), rhs, transpose)
            np.testing.assert_allclose(z, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())
            assert stats.degenerate
        assert batch.solve(rhs[None], transpose)[1][0] == np.inf


def test_well_posed_problems_are_far_below_the_condition_limit():
    """The condition estimates that decide (gecon on Direct's LU) stay two orders below
    the limit on every problem of the test zoo, at two parameter points."""
    from helpers import CASES

    from dpplayers._derivative.conditioning import CONDITION_LIMIT
    from dpplayers._derivative.linear_solvers import Direct

    worst = 0.0
    for name, build in CASES.items():
        case = build()
        prog = dpplayers.compile(case.problem, case.parameters, case.variables,
                                 solver="CLARABEL", gp=case.gp)
        rng = np.random.default_rng(0)
        for _ in range(2):
            sol = prog.solve(*case.sample(rng))
            state = Direct().init(sol._derivative.element(0)[2])
            assert not state.singular, name
            lu = getattr(state.lu, "lu", state.lu)
            worst = max(worst, lu.condition() if lu is not None else 1.0)
    assert worst < CONDITION_LIMIT / 1e2


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("order", [33, 80])
def test_batched_solve_refuses_a_near_singular_element_only(order, batch):
    """The batched solve's probe flags an element of cond 1e9 (NaN: handed to Direct)
    and solves the well-conditioned others exactly."""
    from dpplayers._derivative.pair_pivots import _solve_each

    rng = np.random.default_rng(order)
    S = np.empty((batch, order, order))
    for i in range(batch):
        U, _ = np.linalg.qr(rng.standard_normal((order, order)))
        V, _ = np.linalg.qr(rng.standard_normal((order, order)))
        sigma = np.logspace(0, -9 if i == batch - 1 else -1, order)
        S[i] = U @ np.diag(sigma) @ V.T
    rhs = rng.standard_normal((batch, order, 2))
    z = _solve_each(S, rhs)
    assert np.isnan(z[-1]).all()
    for i in range(batch - 1):
        np.testing.assert_allclose(z[i], np.linalg.solve(S[i], rhs[i]), rtol=1e-10)


# -- an ill-conditioned J is not a singular one -----------------------------------------------


def _scaled_qp(bound: str = "linear"):
    """min ½x₀² + ½·1e-7·x₁² − pᵀx s.t. x₀ ≤ 1 (``bound="linear"``), or s.t. an inactive
    second-order cone ‖x‖ ≤ 1e8 (``"soc"``): unique, x = (min(p₀, 1), 1e7 p₁) (without the
    min for the cone), and J's condition number 1e7 from the objective's scaling alone."""
    p, x = cp.Parameter(2), cp.Variable(2)
    constraint = x[0] <= 1 if bound == "linear" else cp.SOC(cp.Constant(1e8), x)
    prob = cp.Problem(cp.Minimize(0.5 * cp.square(x[0]) + 0.5e-7 * cp.square(x[1]) - p @ x),
                      [constraint])
    return prob, p, x


@pytest.mark.parametrize("bound", ["linear", "soc"])
@pytest.mark.parametrize("mode", ["direct", "dense"])  # LSQR/LSMR stop at cond · atol
@pytest.mark.parametrize("solver", ["CLARABEL", "SCS"])
def test_badly_scaled_qp_is_differentiated_exactly_not_truncated(solver, mode, bound):
    """J of cond 1e7 whose blocks of D are all 1×1 (a QP), or 0 or I (an inactive cone):
    the truncated minimum-norm answer dropped x₁'s direction (gradient 1e-8 instead of
    1e7, flagged degenerate but with no warning); now the LU's answer, equal to the closed
    form, unflagged."""
    prob, p, x = _scaled_qp(bound)
    prog = dpplayers.compile(prob, [p], [x], solver=solver)
    points = np.array([[0.3, 0.5], [2.0, -0.4]])
    args = {"eps": 1e-9} if solver == "SCS" else {}
    sol = prog.solve(points, solver_args={**args, "mode": mode})
    grad, = sol.vjp(np.ones((2, 2)))
    tangent, = sol.jvp(np.array([[1.0, 1.0], [1.0, 1.0]]))
    for i, (p0, _) in enumerate(points):
        dx0 = 1.0 if p0 < 1 or bound == "soc" else 0.0
        np.testing.assert_allclose(grad[i], [dx0, 1e7], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(tangent[i], [dx0, 1e7], rtol=1e-6, atol=1e-6)
    assert not sol.degenerate.any()


def _mpc():
    """A horizon-20 MPC, 4 states, 2 inputs, |u| ≤ 1 (``benchmarks/``' mpc20)."""
    T, nx, nu = 20, 4, 2
    xs, u = cp.Variable((nx, T + 1)), cp.Variable((nu, T))
    x0, A, B = cp.Parameter(nx), cp.Parameter((nx, nx)), cp.Parameter((nx, nu))
    cons = [xs[:, 0] == x0, xs[:, 1:] == A @ xs[:, :-1] + B @ u, u <= 1, u >= -1]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(xs) + 0.1 * cp.sum_squares(u)), cons)
    return prob, [x0, A, B], u


#: x0, A, B of one of benchmarks/' mpc20 draws (batch 64, element 57), to three digits
MPC_POINT = [np.array([-2.742, -0.08, 3.007, 2.962]),
             np.array([[1.197, -0.233, 0.018, -0.089], [-0.072, 1.094, -0.046, 0.097],
                       [0.023, 0.136, 1.093, 0.083], [0.002, -0.006, -0.096, 1.043]]),
             np.array([[-0.436, -0.728], [0.067, -0.836], [0.473, -0.744], [-0.299, -2.122]])]


def test_ill_conditioned_mpc_matches_finite_differences():
    """Unstable random dynamics make an MPC's J ill-conditioned (cond₂ 1.0e6 and, with A
    5% larger, 2.4e6) although the solution is unique: the truncated SVD answered
    (flagged degenerate; the gradient was off by a factor of ten, its sign flipped). Now
    the LU's answer, against central differences of tight Clarabel solves."""
    prob, params, u = _mpc()
    prog = dpplayers.compile(prob, params, [u])
    tight = dpplayers.compile(prob, params, [u], solver="CLARABEL")
    x0, A, B = MPC_POINT
    points = [[x0, A, B], [x0, 1.05 * A, B]]
    batch = [np.stack(v) for v in zip(*points)]
    sol = prog.solve(*batch, solver_args={"eps": 1e-9})
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 2, 20))
    grads = sol.vjp(w)
    direction = [rng.standard_normal(v.shape) for v in batch]
    tangent, = sol.jvp(*direction)
    h = 1e-6
    for i, point in enumerate(points):
        ahead = tight.solve(*[v + h * d[i] for v, d in zip(point, direction)],
                            solver_args={"refine": 2}).values[0]
        behind = tight.solve(*[v - h * d[i] for v, d in zip(point, direction)],
                             solver_args={"refine": 2}).values[0]
        fd = (ahead - behind) / (2 * h)
        np.testing.assert_allclose(tangent[i], fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
        assert np.abs(fd).max() > 1e-2  # two inputs are off their bounds
        directional = sum(np.vdot(g[i], d[i]) for g, d in zip(grads, direction))
        np.testing.assert_allclose(directional, np.vdot(w[i], fd), rtol=1e-5)
    assert not sol.degenerate.any()


def test_a_minimum_norm_derivative_warns_naming_its_batch_elements():
    """The flag alone left a layer's user unaware: torch's backward now warns, once per
    solution, naming the elements, where the requested outputs are not unique (an LP's
    tie); not where only an auxiliary is (the tied-eigenvalue problem: t's segment), nor on
    a well-posed (if ill-conditioned) batch."""
    torch = pytest.importorskip("torch")
    from dpplayers.torch import CvxpyLayer

    x, c = cp.Variable(2), cp.Parameter(2)
    lp = cp.Problem(cp.Minimize(c @ x), [x >= 0, cp.sum(x) == 1])
    layer = CvxpyLayer(lp, parameters=[c], variables=[x], solver="CLARABEL")
    values = torch.tensor([[1.0, 2.0], [1.0, 1.0], [3.0, 3.0]], requires_grad=True)
    out, = layer(values)
    with pytest.warns(dpplayers.DegenerateDerivativeWarning, match=r"batch elements \[1, 2\]"):
        out.sum().backward()

    quiet = [(_tied_problem, np.stack(TIED_POINTS)),
             (_scaled_qp, np.array([[0.3, 0.5], [2.0, -0.4]]))]
    for build, points in quiet:
        prob, p, out_var = build()
        layer = CvxpyLayer(prob, parameters=[p], variables=[out_var], solver="CLARABEL")
        values = torch.tensor(points, requires_grad=True)
        out, = layer(values)
        with warnings.catch_warnings():
            warnings.simplefilter("error", dpplayers.DegenerateDerivativeWarning)
            out.sum().backward()
    np.testing.assert_allclose(values.grad[:, 1], [1e7, 1e7], rtol=1e-6)
