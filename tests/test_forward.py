"""prog.solve matches cvxpy's own solve on the whole problem zoo, batched and unbatched."""

import cvxpy as cp
import numpy as np
import pytest
from helpers import CASES

import dpplayers

SOLVER_ARGS = {
    "SCS": {"eps": 1e-9, "max_iters": 200_000},
    "CLARABEL": {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10},
}


def reference(case, values):
    """Solve with cvxpy (Clarabel, tight) after assigning the parameter values."""
    for p, v in zip(case.parameters, values):
        p.value = v
    case.problem.solve(solver=cp.CLARABEL, gp=case.gp, tol_gap_abs=1e-10, tol_gap_rel=1e-10,
                       tol_feas=1e-10)
    # cvxpy stores some SOC duals with a trailing axis; compare in the variable's shape
    return [np.asarray(v.value, dtype=float).reshape(v.shape) for v in case.variables]


def close(a, b, tol):
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    return np.abs(np.asarray(a) - np.asarray(b)).max(initial=0.0) <= tol * scale


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_cvxpy_unbatched(name, solver):
    case = CASES[name]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables, solver=solver,
                             gp=case.gp)
    rng = np.random.default_rng(0)
    values = case.sample(rng)
    sol = prog.solve(*values, solver_args=SOLVER_ARGS[solver])
    want = reference(case, values)
    assert all(s.ok for s in sol.status)
    for got, ref, var in zip(sol.values, want, case.variables):
        assert got.shape == var.shape
        assert close(got, ref, 2e-5), (var.name(), got, ref)


@pytest.mark.parametrize("name", list(CASES))
def test_batched_matches_elementwise(name):
    case = CASES[name]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables, solver="CLARABEL",
                             gp=case.gp)
    rng = np.random.default_rng(1)
    samples = [case.sample(rng) for _ in range(3)]
    batched = [np.stack(vals) for vals in zip(*samples)]
    sol = prog.solve(*batched, solver_args=SOLVER_ARGS["CLARABEL"])
    for k, s in enumerate(samples):
        want = reference(case, s)
        for got, ref in zip(sol.values, want):
            assert got.shape[0] == 3
            assert close(got[k], ref, 2e-5)


def test_unbatched_parameters_broadcast():
    case = CASES["lp_box"]()  # c does not affect feasibility: batch it alone
    prog = dpplayers.compile(case.problem, case.parameters, case.variables)
    rng = np.random.default_rng(4)
    c0, A, b = case.sample(rng)
    cs = np.stack([c0, -c0, 2 * c0, rng.standard_normal(c0.size)])
    sol = prog.solve(cs, A, b, solver_args=SOLVER_ARGS["SCS"])
    assert sol.values[0].shape == (4, 5)
    for k in range(4):
        assert close(sol.values[0][k], reference(case, [cs[k], A, b])[0], 2e-5)


def test_describe_names_parameters_and_cones():
    case = CASES["lp_box"]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables)
    text = str(prog)
    assert "parameters in A: param" in text or "parameters in A:" in text
    assert f"n = {prog.n}" in text and f"m = {prog.m}" in text
    assert "nnz" in text


def test_factorisation_reused_when_only_b_and_c_change():
    case = CASES["qp_box_projection"]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables)
    assert prog.C_A.is_constant and prog.C_P.is_constant
    rng = np.random.default_rng(2)
    y = 2 * rng.standard_normal((4, 5))
    sol = prog.solve(y)
    np.testing.assert_allclose(sol.values[0], np.clip(y, -1, 1), atol=1e-6)
    sol2 = prog.solve(-y)  # reuses the cached workspace (b, c updated)
    np.testing.assert_allclose(sol2.values[0], np.clip(-y, -1, 1), atol=1e-6)


def test_warm_start_cuts_iterations():
    case = CASES["socp_norm_residual"]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables)
    rng = np.random.default_rng(3)
    values = case.sample(rng)
    cold = prog.solve(*values, solver_args={"eps": 1e-7})
    warm = prog.solve(*values, solver_args={"eps": 1e-7}, warm_start=cold)
    assert warm.info[0]["iterations"] < cold.info[0]["iterations"]
    np.testing.assert_allclose(warm.values[0], cold.values[0], atol=1e-5)


def test_compiling_a_gp_problem_twice():
    """cvxpy caches its chain on the Problem; a second DGP compile must not re-read values."""
    a = cp.Parameter(pos=True)
    x = cp.Variable(pos=True)
    prob = cp.Problem(cp.Minimize(1 / x), [a * x <= 1])
    dpplayers.compile(prob, [a], [x], gp=True)
    again = dpplayers.compile(prob, [a], [x], gp=True)
    assert abs(again.solve(2.0, solver_args={"eps": 1e-9}).values[0] - 0.5) < 1e-6


def test_thread_pool_gives_the_same_batch():
    case = CASES["socp_sum_of_norms"]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables)
    rng = np.random.default_rng(5)
    values = [np.stack(v) for v in zip(*[case.sample(rng) for _ in range(6)])]
    serial = prog.solve(*values, solver_args={"eps": 1e-9, "n_jobs": 1})
    pooled = prog.solve(*values, solver_args={"eps": 1e-9, "n_jobs": 2})
    # equal to solver tolerance: a reused SCS workspace keeps its adapted step scale, so
    # which thread's workspace solves an element shows in the last digits
    np.testing.assert_allclose(serial.values[0], pooled.values[0], atol=1e-8)
    with pytest.raises(ValueError, match="n_jobs must be a positive integer, got 0"):
        prog.solve(*values, solver_args={"n_jobs": 0})


def test_recent_solutions_reuses_identical_calls():
    from dpplayers._recent import RecentSolutions

    case = CASES["qp_box_projection"]()
    prog = dpplayers.compile(case.problem, case.parameters, case.variables)
    recent = RecentSolutions(maxsize=2)
    y = np.arange(5.0)
    first = recent.solve(prog, [y], {"eps": 1e-9}, "raise")
    assert recent.solve(prog, [y.copy()], {"eps": 1e-9}, "raise") is first
    assert recent.solve(prog, [y], {"eps": 1e-8}, "raise") is not first  # other settings
    recent.solve(prog, [y + 1], {"eps": 1e-9}, "raise")  # evicts the oldest entry
    assert recent.solve(prog, [y], {"eps": 1e-9}, "raise") is not first


def test_scs_linear_solver_follows_the_kkt_order_unless_the_user_names_one():
    import scs

    from dpplayers._solve.backends import QDLDL_MAX_ORDER, SCS, _scs_auto_linear_solver

    small = SCS(dpplayers.cones.ConeDims(nonneg=10), n=5)
    large = SCS(dpplayers.cones.ConeDims(zero=QDLDL_MAX_ORDER), n=1)
    assert small.settings({})["linear_solver"] is scs.LinearSolver.QDLDL
    assert large.settings({})["linear_solver"] is _scs_auto_linear_solver()
    assert small.settings({"linear_solver": "mkl"})["linear_solver"] == "mkl"
    assert small.settings({"eps": 1e-11})["linear_solver"] is _scs_auto_linear_solver()
    # the choice reaches SCS and solves the same problem as SCS's own default
    x = cp.Variable(3)
    c = cp.Parameter(3)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x)), [x >= -1]),
                             [c], [x])
    auto = prog.solve(np.array([1.0, -2.0, 3.0]), solver_args={"linear_solver": "auto"})
    ours = prog.solve(np.array([1.0, -2.0, 3.0]))
    np.testing.assert_allclose(ours.values[0], auto.values[0], atol=1e-7)
    np.testing.assert_allclose(ours.values[0], [-0.5, 1.0, -1.0], atol=1e-7)


def test_solver_settings_are_remembered_per_argument_set():
    """The translated settings are computed once per distinct solver_args (read-only and
    shared); unhashable arguments are translated afresh; a bad setting still raises."""
    x = cp.Variable(2)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(x - cp.Parameter(2)))),
                             None, [x])
    backend = prog.backend
    first = backend.settings_for({"eps": 1e-7})
    assert backend.settings_for({"eps": 1e-7}) is first
    assert first["eps_abs"] == 1e-7
    assert backend.settings_for({"eps": 1e-6})["eps_abs"] == 1e-6
    with pytest.raises(TypeError):
        first["eps_abs"] = 1.0  # shared between calls: read-only
    assert backend.settings_for({"eps": np.array(1e-7)})["eps_abs"] == 1e-7  # unhashable
    sol = prog.solve(np.ones(2), solver_args={"eps": 1e-7})
    np.testing.assert_allclose(sol.values[0], np.ones(2), atol=1e-5)


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_a_problem_without_constraints(solver):
    """min ‖x‖² + qᵀx has no constraint (m = 0, which SCS refuses): it gets one that never
    binds, and x = −q/2 with dx/dq = −I/2, batched or not."""
    x, q = cp.Variable(3), cp.Parameter(3)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(x) + q @ x)), [q], [x],
                             solver=solver)
    qs = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    sol = prog.solve(qs)
    np.testing.assert_allclose(sol.values[0], -qs / 2, atol=1e-6)
    w = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]])
    np.testing.assert_allclose(sol.vjp(w)[0], -w / 2, atol=1e-8)
    np.testing.assert_allclose(prog.solve(qs[0]).jacobian()[0][0], -np.eye(3) / 2, atol=1e-8)


def test_an_unknown_scs_setting_is_named():
    x, q = cp.Variable(3), cp.Parameter(3)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(x) + q @ x), [x >= 0]),
                             [q], [x])
    with pytest.raises(ValueError, match="SCS rejected.*no_such_setting"):
        prog.solve(np.ones(3), solver_args={"no_such_setting": 1})


def test_parsed_calls_are_kept_per_argument_values():
    """A program remembers each distinct solver_args it parsed (values and their types),
    so a later call with other values is not answered with an earlier call's settings."""
    x, y = cp.Variable(20), cp.Parameter(20)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(x - y)),
                                        [cp.sum(x) == 1, x >= 0]), [y], [x])
    rng = np.random.default_rng(4)
    loose, tight = {"max_iters": 3}, {"max_iters": 10_000}
    for point in (rng.standard_normal(20), rng.standard_normal(20)):
        want = cp.Problem(cp.Minimize(cp.sum_squares(x - point)), [cp.sum(x) == 1, x >= 0])
        want.solve(solver=cp.CLARABEL)
        assert prog.solve(point, solver_args=tight).status[0] is dpplayers.Status.OPTIMAL
        with pytest.warns(dpplayers.InaccurateSolutionWarning):
            short = prog.solve(point, solver_args=loose)
        assert short.status[0] is dpplayers.Status.ITERATION_LIMIT
        again = prog.solve(point, solver_args=tight)
        np.testing.assert_allclose(again.values[0], x.value, atol=1e-6)
    prog.solve(point, solver_args={"max_iters": 10_000.0})  # same value, another type
    assert len(prog.parsed_calls) == 3


def test_scs_extension_gives_the_wrappers_answer():
    """SCS built through its C extension directly (dpplayers' own linear-solver choice) and
    through SCS's Python wrapper (a linear solver named as a string) solve the same cone
    program to the same point in the same iterations, with and without a kept workspace."""
    x, q = cp.Variable(6), cp.Parameter(6)
    G = cp.Parameter((4, 6))
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(x) + q @ x),
                                        [G @ x <= 1, x >= -2]), [q, G], [x])
    rng = np.random.default_rng(5)
    for _ in range(2):
        values = rng.standard_normal(6), rng.standard_normal((4, 6))
        direct = prog.solve(*values)
        wrapped = prog.solve(*values, solver_args={"linear_solver": "qdldl"})
        np.testing.assert_allclose(direct.values[0], wrapped.values[0], rtol=0, atol=1e-12)
        assert direct.info[0]["iterations"] == wrapped.info[0]["iterations"]


def least_squares_layer_problem(rows: int = 120, cols: int = 80):
    F, g = cp.Parameter((rows, cols), name="F"), cp.Parameter(rows, name="g")
    x = cp.Variable(cols, name="x")
    return cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g))), [F, g], [x]


def least_squares_gradients(F, g, c):
    """x = F⁺g and the gradients of cᵀx (closed form: r = g − Fx, w = (FᵀF)⁻¹c,
    d/dF = r wᵀ − (F w) xᵀ, d/dg = F w), per element."""
    x = np.stack([np.linalg.lstsq(Fk, gk, rcond=None)[0] for Fk, gk in zip(F, g)])
    w = np.linalg.solve(F.transpose(0, 2, 1) @ F, c[..., None])[..., 0]
    r = g - np.einsum("bij,bj->bi", F, x)
    Fw = np.einsum("bij,bj->bi", F, w)
    return x, r[:, :, None] * w[:, None, :] - Fw[:, :, None] * x[:, None, :], Fw


def test_large_batched_parameters_reach_theta_and_back_exactly():
    """A batch of matrices larger than _sparse.CACHE_BYTES is moved to θ and its gradient
    back by tiles (copy_tiled): values and gradients against the closed form, at two
    points, compiled with values unset."""
    from dpplayers._sparse import CACHE_BYTES
    problem, params, outputs = least_squares_layer_problem()
    prog = dpplayers.compile(problem, params, outputs, solver="CLARABEL")
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        F, g, c = rng.standard_normal((8, 120, 80)), rng.standard_normal((8, 120)), \
            rng.standard_normal((8, 80))
        assert F.nbytes > CACHE_BYTES
        x, dF, dg = least_squares_gradients(F, g, c)
        sol = prog.solve(F, g)
        assert sol.ok.all()
        np.testing.assert_allclose(sol.values[0], x, atol=1e-7)
        gF, gg = sol.vjp(c)
        np.testing.assert_allclose(gF, dF, atol=1e-6)
        np.testing.assert_allclose(gg, dg, atol=1e-6)


@pytest.mark.parametrize("shape, axes", [((700, 3, 90), (0, 1)), ((5, 90, 300), (-2, -1)),
                                         ((40000, 3), (0,)), ((3, 40000), (-1,))])
def test_copy_tiled_is_an_assignment(shape, axes):
    """copy_tiled on strided views (transposes of a large array) equals numpy's assignment."""
    from dpplayers._sparse import CACHE_BYTES, c_ordered, copy_tiled
    a = np.random.default_rng(0).standard_normal(shape[::-1]).T  # every axis reversed
    assert a.nbytes > CACHE_BYTES and not a.flags.c_contiguous
    out = np.empty(shape)
    copy_tiled(out, a, axes)
    np.testing.assert_array_equal(out, a)
    c = c_ordered(a)
    assert c.flags.c_contiguous
    np.testing.assert_array_equal(c, a)
