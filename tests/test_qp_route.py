"""The dense QP route (dpplayers/_solve/qp_route.py, dense_qp.py, qp_systems.py): exact
where it solves, the conic path's statuses where it does not, and declined where it cannot
honour a call.

Oracles: CVXPY's own solve (Clarabel, tight), central finite differences of CVXPY's
solves, and dpplayers' conic path (Clarabel at 1e-11 plus Newton refinement, which the
route declines) for derivatives.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import SolverError, Status
from dpplayers._solve import dense_qp, qp_route, qp_systems

B = qp_route.MIN_BATCH + 2
#: The conic reference: tighter than the route accepts (so it declines), then polished.
CONIC = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "refine": 3}
CVXPY_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12}
FD_TOL = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}  # at shifted points


def rel(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / max(np.abs(want).max(), 1.0))


def optnet(n: int, n_ineq: int, n_eq: int, psd: bool = True, box: bool = False):
    """An OptNet QP with every datum a parameter (``psd=False``: an LP, Q absent; ``box``:
    with |z| <= 1, which bounds an LP or a QP with singular Q)."""
    z = cp.Variable(n, name="z")
    Q = cp.Parameter((n, n), PSD=True, name="Q")
    q, G, h = cp.Parameter(n, name="q"), cp.Parameter((n_ineq, n), name="G"), \
        cp.Parameter(n_ineq, name="h")
    A, b = cp.Parameter((n_eq, n), name="A"), cp.Parameter(n_eq, name="b")
    cons = [G @ z <= h, A @ z == b]
    if box or not psd:
        cons += [z >= -1, z <= 1]
    if psd:
        objective = 0.5 * cp.quad_form(z, Q) + q @ z
        params = [Q, q, G, h, A, b]
    else:
        objective = q @ z
        params = [q, G, h, A, b]
    con = cons[0]
    return cp.Problem(cp.Minimize(objective), cons), params, [z, con.dual_variables[0]]


def optnet_values(rng, n, n_ineq, n_eq, count, psd=True, rank=None):
    """Feasible, bounded values; ``rank``: Q of this rank (PSD, singular)."""
    out = []
    for _ in range(count):
        M = rng.standard_normal((n, rank or n))
        Q = M @ M.T / n + (0.1 * np.eye(n) if rank is None else 0)
        G, A = rng.standard_normal((n_ineq, n)), rng.standard_normal((n_eq, n))
        z0 = rng.uniform(-0.5, 0.5, n)
        margin = rng.uniform(0.1, 1.0, n_ineq)
        if psd:  # some rows tight at z0 (an LP's vertex would be degenerate)
            margin[rng.uniform(size=n_ineq) < 0.4] = 0.0
        h = G @ z0 + margin
        point = [Q] if psd else []
        out.append(point + [rng.standard_normal(n), G, h, A, A @ z0])
    return [np.stack(v) for v in zip(*out)]


def cvxpy_solve(problem, params, outputs, values, k, tol=CVXPY_TIGHT):
    for p, v in zip(params, values):
        p.value = v[k]
    try:
        problem.solve(solver=cp.CLARABEL, **tol)
    except cp.error.SolverError:  # Clarabel at 1e-12 fails now and then: 1e-10 is ample
        problem.solve(solver=cp.CLARABEL, **FD_TOL)
    out = [o.value for o in outputs]
    for p in params:
        p.value = None
    return out


def assert_same_derivatives(rng, sol, ref, values, tol: float) -> None:
    """sol's vjp and jvp equal ref's to ``tol`` (relative) for random (co)tangents."""
    cot = [rng.standard_normal(v.shape) for v in sol.values]
    tan = [rng.standard_normal(v.shape) for v in values]
    for got, want in zip(sol.vjp(*cot), ref.vjp(*cot)):
        assert rel(got, want) < tol
    for got, want in zip(sol.jvp(*tan), ref.jvp(*tan)):
        assert rel(got, want) < tol


def routed(sol) -> bool:
    return all(i["status"] == qp_route.SOLVER_STATUS for i in sol.info)


CASES = {  # name: (n, n_ineq, n_eq, psd, rank): Schur, Augmented (LP, singular P), and
    # systems of order >= qp_systems.LOOP_MIN_ORDER (LAPACK per element); all dense enough
    # (qp_route.MIN_FILL) and of n + m >= qp_route.MIN_ORDER
    "qp_schur": (40, 20, 5, True, None),
    "lp_augmented": (20, 60, 4, False, None),
    "qp_singular_P": (30, 60, 4, True, 5),
    "qp_schur_lapack_loop": (90, 70, 10, True, None),
    "qp_schur_equalities_lapack_loop": (60, 30, 24, True, None),
    # 21 MB of dense data for the batch: two chunks (qp_route.CHUNK_BYTES) on the pool
    "qp_schur_chunks": (180, 80, 20, True, None),
    "lp_augmented_lapack_loop": (66, 150, 2, False, None),
}


@pytest.mark.parametrize("name", CASES)
def test_route_values_and_derivatives_are_exact(name):
    n, n_ineq, n_eq, psd, rank = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    problem, params, outputs = optnet(n, n_ineq, n_eq, psd, box=rank is not None)
    values = optnet_values(rng, n, n_ineq, n_eq, B, psd, rank)
    prog = dpplayers.compile(problem, params, outputs)  # values unset
    sol = prog.solve(*values, solver_args={"eps": 1e-8})
    assert routed(sol) and sol.ok.all()
    ref_prog = dpplayers.compile(problem, params, outputs, solver="CLARABEL")
    ref = ref_prog.solve(*values, solver_args=CONIC)
    assert not any(routed(ref) for _ in [0])
    for k in (0, B - 1):  # CVXPY's own answer (Clarabel's interior point at an LP's vertex
        want = cvxpy_solve(problem, params, outputs, values, k)  # is good to ~1e-7 only)
        for got, w in zip(sol.values, want):
            assert rel(got[k], w) < 1e-6
    for got, want in zip(sol.values, ref.values):
        assert rel(got, want) < 1e-8
    assert_same_derivatives(rng, sol, ref, values, 1e-8)
    assert sol.degenerate.tolist() == ref.degenerate.tolist()


@pytest.mark.parametrize("psd", [True, False])
def test_route_with_data_shared_by_the_batch(psd):
    """Problem data that no parameter touches (a constant Q or cost, constant equality
    rows) is one column shared by the batch, on both eliminations: as exact as data that
    varies per element."""
    n, n_ineq, n_eq = (40, 20, 5) if psd else (20, 60, 4)
    rng = np.random.default_rng(12)
    z0 = rng.uniform(-0.5, 0.5, n)  # feasible for every element
    A0 = rng.standard_normal((n_eq, n))
    z = cp.Variable(n)
    G, h = cp.Parameter((n_ineq, n)), cp.Parameter(n_ineq)
    cons = [G @ z <= h, A0 @ z == A0 @ z0]
    if psd:
        q = cp.Parameter(n)
        problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, optnet_values(
            rng, n, n_ineq, n_eq, 1)[0][0]) + q @ z), cons)
        params = [q, G, h]
    else:
        problem = cp.Problem(cp.Minimize(rng.standard_normal(n) @ z), [*cons, z >= -1, z <= 1])
        params = [G, h]
    Gs = rng.standard_normal((B, n_ineq, n))
    values = [Gs, Gs @ z0 + rng.uniform(0.1, 1.0, (B, n_ineq))]
    if psd:
        values.insert(0, rng.standard_normal((B, n)))
    prog = dpplayers.compile(problem, params, [z])
    sol = prog.solve(*values)
    assert routed(sol) and sol.ok.all()
    ref = dpplayers.compile(problem, params, [z], solver="CLARABEL").solve(
        *values, solver_args=CONIC)
    assert rel(sol.values[0], ref.values[0]) < 1e-8
    cot = rng.standard_normal(sol.values[0].shape)
    for got, want in zip(sol.vjp(cot), ref.vjp(cot)):
        assert rel(got, want) < 1e-8


def test_route_jvp_matches_cvxpy_finite_differences():
    """Two parameter points, a batch alternating between them: jvp against central
    differences of CVXPY's own solves at each point."""
    n, n_ineq, n_eq = 40, 20, 5
    rng = np.random.default_rng(11)
    problem, params, outputs = optnet(n, n_ineq, n_eq)
    points = optnet_values(rng, n, n_ineq, n_eq, 2)
    values = [np.stack([v[k % 2] for k in range(B)]) for v in points]
    prog = dpplayers.compile(problem, params, outputs[:1])
    sol = prog.solve(*values)
    assert routed(sol)
    tan = [rng.standard_normal(v.shape[1:]) for v in values]
    tan[0] = tan[0] + tan[0].T  # Q stays symmetric
    dx = sol.jvp(*[np.broadcast_to(t, v.shape) for t, v in zip(tan, values)])[0]
    h = 1e-5
    for k in (0, 1):
        plus = [np.stack([v[k] + h * t]) for v, t in zip(values, tan)]
        minus = [np.stack([v[k] - h * t]) for v, t in zip(values, tan)]
        fd = (cvxpy_solve(problem, params, outputs[:1], plus, 0, FD_TOL)[0]
              - cvxpy_solve(problem, params, outputs[:1], minus, 0, FD_TOL)[0]) / (2 * h)
        assert rel(dx[k], fd) < 1e-5
        assert rel(dx[k + 2], dx[k]) < 1e-9  # the same point, the same answer


def _spoiled(kind: str):
    """An LP z >= -l, D z <= u (D dense, positive: bounded), min qᵀz with q > 0, batch of
    B, whose element 3 is infeasible (z >= 10 and D z <= 1) or unbounded (D < 0 there and
    q < 0: z grows without limit)."""
    n, k = 30, 40
    rng = np.random.default_rng(3)
    z = cp.Variable(n)
    q, lo, D, up = cp.Parameter(n), cp.Parameter(n), cp.Parameter((k, n)), cp.Parameter(k)
    problem = cp.Problem(cp.Minimize(q @ z), [-z <= lo, D @ z <= up])
    qs, los = rng.uniform(0.5, 1.5, (B, n)), np.ones((B, n))
    Ds, ups = rng.uniform(0.1, 1.0, (B, k, n)), np.full((B, k), 10.0)
    if kind == "infeasible":
        los[3], ups[3] = -10.0, 1.0
    else:
        Ds[3], qs[3] = -Ds[3], -1.0
    return problem, [q, lo, D, up], [z], [qs, los, Ds, ups]


@pytest.mark.parametrize("kind,status", [("infeasible", Status.INFEASIBLE),
                                         ("unbounded", Status.UNBOUNDED)])
@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_failed_elements_get_the_conic_status(kind, status, solver):
    problem, params, outputs, values = _spoiled(kind)
    prog = dpplayers.compile(problem, params, outputs, solver=solver)
    with pytest.warns(RuntimeWarning, match="1 of"):
        sol = prog.solve(*values, on_failure="nan")
    assert sol.status[3] is status
    assert np.isnan(sol.values[0][3]).all() and not np.isnan(sol.values[0][[0, 4]]).any()
    assert rel(sol.values[0][0], -1.0) < 1e-9  # z = -l
    with pytest.warns(RuntimeWarning, match="1 of 1"):
        alone = prog.solve(*[v[3] for v in values], on_failure="nan")
    assert alone.status[0] is status  # what the conic path says of it alone
    others = [k for k in range(B) if k != 3]
    assert all(sol.info[k]["status"] == qp_route.SOLVER_STATUS for k in others)
    g = sol.vjp(np.ones_like(sol.values[0]))
    assert np.isnan(g[0][3]).all() and np.isfinite(g[0][others]).all()
    with pytest.raises(SolverError, match="batch element 3"):
        prog.solve(*values)


def _soc_problem():
    x, y, G = cp.Variable(30), cp.Parameter(30), cp.Parameter((40, 30))
    return (cp.Problem(cp.Minimize(cp.norm(x - y, 2) + cp.sum(x)), [G @ x <= 1]), [y, G],
            [x])


@pytest.mark.parametrize("why", ["second-order cone", "small batch", "max_iters", "eps",
                                 "time_limit", "warm start", "too large", "too small",
                                 "sparse"])
def test_route_declines(why):
    rng = np.random.default_rng(5)
    problem, params, outputs = optnet(40, 20, 5)
    values = optnet_values(rng, 40, 20, 5, B)
    args: dict = {}
    if why == "second-order cone":
        problem, params, outputs = _soc_problem()
        values = [rng.standard_normal((B, 30)), rng.uniform(-0.1, 0.1, (B, 40, 30))]
    elif why == "small batch":
        values = [v[: qp_route.MIN_BATCH - 1] for v in values]
    elif why == "max_iters":
        args = {"max_iters": 5}
    elif why == "eps":
        args = {"eps": 1e-12}
    elif why == "time_limit":
        args = {"time_limit_secs": 10.0}
    elif why == "too large":  # an LP in a box, n + m = MAX_ORDER + 1, 86 % full
        n, n_ineq = 100, qp_route.MAX_ORDER - 300
        problem, params, outputs = optnet(n, n_ineq, 1, psd=False)
        values = optnet_values(rng, n, n_ineq, 1, B, psd=False)
    elif why == "too small":
        problem, params, outputs = optnet(8, 5, 2)
        values = optnet_values(rng, 8, 5, 2, B)
    elif why == "sparse":  # the box's 80 rows of ±I leave A and P 38 % full
        problem, params, outputs = optnet(40, 20, 5, box=True)
    prog = dpplayers.compile(problem, params, outputs)
    warm = prog.solve(*values) if why == "warm start" else None
    sol = prog.solve(*values, solver_args=args, warm_start=warm, on_failure="nan")
    assert not any(i["status"] == qp_route.SOLVER_STATUS for i in sol.info)
    if why == "too large":  # one row fewer is taken: the bound, not the fill, declined it
        nnz_A = prog.A.indices.size
        assert not qp_route.accepts(prog.cones, prog.n, prog.m, nnz_A, None, B)
        assert qp_route.accepts(prog.cones, prog.n, prog.m - 1, nnz_A - n, None, B)
    if why == "max_iters":
        assert all(s is Status.ITERATION_LIMIT for s in sol.status)


def _degenerate_values(rng, n, n_ineq, n_eq, duplicated: bool, weak: bool):
    """OptNet values whose solution is a chosen z: rows 0 and 1 copies of each other and
    both active (their multipliers split: non-unique) and/or row 2 active with a zero
    multiplier (weakly active: the solution map has one-sided derivatives there)."""
    Q, _, G, _, A, _ = optnet_values(rng, n, n_ineq, n_eq, B)
    z = rng.uniform(-0.5, 0.5, (B, n))
    if duplicated:
        G[:, 1] = G[:, 0]
    h = np.einsum("bij,bj->bi", G, z) + rng.uniform(0.1, 1.0, (B, n_ineq))
    tight = [0, 1] * duplicated + [2] * weak
    h[:, tight] = np.einsum("bij,bj->bi", G[:, tight], z)
    lam = np.zeros((B, n_ineq))
    if duplicated:
        lam[:, 0] = lam[:, 1] = 0.5
    nu = rng.standard_normal((B, n_eq))
    q = -(np.einsum("bij,bj->bi", Q, z) + np.einsum("bji,bj->bi", G, lam)
          + np.einsum("bji,bj->bi", A, nu))
    return [Q, q, G, h, A, np.einsum("bij,bj->bi", A, z)], z


def _routed_degenerate(seed: int, duplicated: bool = False, weak: bool = False):
    """An OptNet QP (n = 40) with a duplicated or a weakly active row, solved by the route,
    whose point is checked exact: (rng, problem, params, outputs, values, exact point z,
    solution)."""
    n, n_ineq, n_eq = 40, 20, 5
    rng = np.random.default_rng(seed)
    problem, params, outputs = optnet(n, n_ineq, n_eq)
    values, z = _degenerate_values(rng, n, n_ineq, n_eq, duplicated=duplicated, weak=weak)
    sol = dpplayers.compile(problem, params, outputs[:1]).solve(*values)
    assert routed(sol)
    assert rel(sol.values[0], z) < 1e-10
    return rng, problem, params, outputs, values, z, sol


def _generic(sol):
    """A copy of ``sol`` whose derivative ignores the route's kept factors (the generic
    assembly and LU of J): what a pickled copy does."""
    import pickle
    copy = pickle.loads(pickle.dumps(sol))
    assert copy._derivative.route is None
    return copy


def _kept_factor_elements(sol) -> set[int]:
    """The elements whose J solves went through the route's kept factors."""
    route = sol._derivative.route
    return set() if route is None else set(route.handles).difference(route.declined)


@pytest.mark.parametrize("name", ["qp_schur", "qp_schur_lapack_loop"])
def test_kept_factors_give_the_generic_derivative(name):
    """Where P is definite the forward's factors (P's, A P⁻¹ Aᵀ) serve J's solves: at two
    parameter points (alternating in the batch) vjp, jvp and the Jacobian equal those of
    J's generic LU, and no element's J is assembled."""
    n, n_ineq, n_eq, psd, _ = CASES[name]
    rng = np.random.default_rng(21)
    problem, params, outputs = optnet(n, n_ineq, n_eq, psd)
    points = optnet_values(rng, n, n_ineq, n_eq, 2)
    values = [np.stack([v[k % 2] for k in range(B)]) for v in points]
    sol = dpplayers.compile(problem, params, outputs).solve(*values)
    assert routed(sol)
    generic = _generic(sol)
    assert_same_derivatives(rng, sol, generic, values, 1e-11)
    assert _kept_factor_elements(sol) == set(range(B))
    assert not sol._derivative.factors  # no generic factorisation was built
    assert (sol.residual < 1e-12).all() and not sol.degenerate.any()
    small = [v[:2] for v in values]  # the Jacobian: the generic path at batch 2 (no route)
    jac = dpplayers.compile(problem, params, outputs[:1]).solve(*small).jacobian()
    sol_z = dpplayers.compile(problem, params, outputs[:1]).solve(*values)
    full = sol_z.jacobian()
    for got, want in zip(full[0], jac[0]):
        assert rel(got[:2], want) < 1e-8  # two solvers' points (the route, SCS + Newton)
    assert _kept_factor_elements(sol_z) == set(range(B))


def test_duplicated_active_rows_differentiate_as_the_conic_path():
    """Two copies of an active inequality (non-unique multipliers: J is singular): the
    route's point gives the conic path's values and x-derivative (unique), and flags
    elements exactly as it does."""
    rng, problem, params, outputs, values, z, sol = _routed_degenerate(8, duplicated=True)
    n = z.shape[1]
    ref = dpplayers.compile(problem, params, outputs[:1], solver="CLARABEL").solve(
        *values, solver_args=CONIC)
    w = rng.standard_normal((B, n))
    got, want = sol.vjp(w), ref.vjp(w)
    assert sol.degenerate.tolist() == ref.degenerate.tolist()
    for i in (0, 1, 4, 5):  # Q, q, A, b (G's and h's rows 0 and 1 act as one: not unique)
        assert rel(got[i], want[i]) < 1e-7
    # S = A_act P⁻¹ A_actᵀ is singular: the kept factors decline every element
    assert not _kept_factor_elements(sol)
    for g, h in zip(got, _generic(sol).vjp(w)):
        assert np.array_equal(g, h)


def test_weakly_active_row_gives_a_one_sided_derivative():
    """A row active with a zero multiplier: the solution is exact (the interior point
    alone converges only as √μ there; the active-set polish makes it exact) and jvp is
    one of the two one-sided derivatives (central differences would average them)."""
    rng, problem, params, outputs, values, z, sol = _routed_degenerate(9, weak=True)
    tan = [rng.standard_normal(v.shape) for v in values]
    tan[0] = tan[0] + tan[0].transpose(0, 2, 1)
    dx = sol.jvp(*tan)[0]
    # the kept factors decline a weakly active row: the generic path's side stands
    assert not _kept_factor_elements(sol)
    assert np.array_equal(dx, _generic(sol).jvp(*tan)[0])
    h = 1e-4
    for k in (0, 1):
        at = z[k]  # exact (an interior-point solve is accurate to √μ only, here)
        sides = []
        for sign in (1, -1):  # one-sided differences, Richardson-extrapolated: O(h²)
            step = []
            for size in (h, h / 2):
                moved = [np.stack([v[k] + sign * size * t[k]]) for v, t in zip(values, tan)]
                step.append(sign * (cvxpy_solve(problem, params, outputs[:1], moved, 0)[0]
                                    - at) / size)
            sides.append(2 * step[1] - step[0])
        errors = sorted(rel(dx[k], side) for side in sides)
        assert errors[0] < 1e-4 and errors[1] > 1e-2  # one side, and clearly not the other


def test_tolerance_is_tight():
    """The route's stopping rule is far tighter than the conic solvers' default 1e-8."""
    assert dense_qp.TOLERANCE <= 1e-11 and qp_route.MIN_EPS >= dense_qp.TOLERANCE


def test_dependent_equality_rows_keep_the_whole_newton_system():
    """Equality rows once eliminated from every iteration's system (qp_systems.Equalities)
    need A_eq of full row rank; with a repeated equality row the route keeps the whole
    system, and the batch's values and derivatives are still CVXPY's and the conic path's."""
    n, n_ineq, n_eq = 40, 20, 5
    rng = np.random.default_rng(31)
    problem, params, outputs = optnet(n, n_ineq, n_eq)
    values = optnet_values(rng, n, n_ineq, n_eq, B)
    values[4][:, 1], values[5][:, 1] = values[4][:, 0], values[5][:, 0]  # A, b: row 1 = row 0
    A = np.concatenate([values[4], values[2]], axis=1)  # equalities first, as SCS orders
    M = A @ np.linalg.solve(values[0], A.transpose(0, 2, 1))
    assert qp_systems.Equalities.of(M, n_eq) is None
    assert qp_systems.Equalities.of(M[:, 1:, 1:], n_eq - 1) is not None  # without the copy
    sol = dpplayers.compile(problem, params, outputs[:1]).solve(*values)
    ref = dpplayers.compile(problem, params, outputs[:1], solver="CLARABEL").solve(
        *values, solver_args=CONIC)
    for k in (0, B - 1):
        assert rel(sol.values[0][k], cvxpy_solve(problem, params, outputs[:1], values, k)[0]) < 1e-6
    assert rel(sol.values[0], ref.values[0]) < 1e-8
    cot = rng.standard_normal(sol.values[0].shape)
    for i in (0, 1, 2, 3):  # Q, q, G, h (A's and b's rows 0 and 1 act as one: not unique)
        assert rel(sol.vjp(cot)[i], ref.vjp(cot)[i]) < 1e-7
