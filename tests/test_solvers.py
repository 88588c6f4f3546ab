"""The solver layer: Clarabel workspaces that refuse updates, SCS's linear-system back end,
inaccurate solves (warn, or fail on request) and cvxpylayers' solver_args spellings."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import SolverError, Status

CLARABEL_TIGHT = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}


def spd(rng: np.random.Generator, n: int) -> np.ndarray:
    M = rng.standard_normal((n, n))
    return M @ M.T + n * np.eye(n)


def cvxpy_values(problem, parameters, variables, values):
    """cvxpy's own Clarabel solve at these values (the oracle)."""
    for p, v in zip(parameters, values):
        p.value = v
    problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    return [np.asarray(v.value, dtype=float) for v in variables]


# -- item 9: Clarabel's chordal decomposition refuses data updates ----------------------

def log_det_problem():
    S = cp.Parameter((3, 3), symmetric=True, name="S")
    X = cp.Variable((3, 3), symmetric=True)
    problem = cp.Problem(cp.Minimize(cp.trace(S @ X) - cp.log_det(X)), [cp.diag(X) <= 2])
    return problem, [S], [X], lambda rng: [spd(rng, 3)]


def sigma_max_problem():
    B = cp.Parameter((3, 2), name="B")
    X = cp.Variable((3, 2))
    problem = cp.Problem(cp.Minimize(cp.sigma_max(X - B) + cp.sum(X)), [X >= -1])
    return problem, [B], [X], lambda rng: [rng.standard_normal((3, 2))]


def tr_inv_problem():
    c = cp.Parameter(3, name="c")
    X = cp.Variable((3, 3), PSD=True)
    problem = cp.Problem(cp.Minimize(cp.tr_inv(X) + c @ cp.diag(X)), [cp.trace(X) <= 5])
    return problem, [c], [X], lambda rng: [rng.uniform(0.5, 2.0, 3)]


def sparse_psd_problem():
    """An arrow-shaped (chordal, sparse) PSD constraint: Clarabel decomposes it."""
    d = cp.Parameter(4, name="d")
    x = cp.Variable(4)
    t = cp.Variable()
    arrow = cp.bmat([[t, x[0], x[1], x[2]], [x[0], 1, 0, 0], [x[1], 0, 1, 0], [x[2], 0, 0, 1]])
    problem = cp.Problem(cp.Minimize(t + d @ x + cp.sum_squares(x)), [arrow >> 0])
    return problem, [d], [x], lambda rng: [rng.standard_normal(4)]


CHORDAL = [log_det_problem, sigma_max_problem, tr_inv_problem, sparse_psd_problem]


@pytest.mark.parametrize("build", CHORDAL, ids=lambda b: b.__name__)
def test_clarabel_with_chordal_decomposition_solves_again_and_in_batches(build):
    problem, parameters, variables, sample = build()
    prog = dpplayers.compile(problem, parameters, variables, solver="CLARABEL")
    rng = np.random.default_rng(0)
    points = [sample(rng) for _ in range(4)]  # 4: the thread pool's minimum
    for values in points:  # one after another on the same program
        got = prog.solve(*values, solver_args=CLARABEL_TIGHT).values[0]
        want, = cvxpy_values(problem, parameters, variables, values)
        np.testing.assert_allclose(got, want, atol=1e-6)
    batch = [np.stack(v) for v in zip(*points)]
    for n_jobs in (1, 2):  # serially and on the thread pool
        sol = prog.solve(*batch, solver_args={**CLARABEL_TIGHT, "n_jobs": n_jobs})
        for k, values in enumerate(points):
            want, = cvxpy_values(problem, parameters, variables, values)
            np.testing.assert_allclose(sol.values[0][k], want, atol=1e-6)


# -- item 15: an iteration limit returns the point with a warning ------------------------

def norm_problem():
    A = cp.Parameter((5, 5), name="A")
    x = cp.Variable(5, name="x")
    problem = cp.Problem(cp.Minimize(cp.norm(A @ x - 1) + cp.norm(x, 1)))
    return problem, A, x


LIMITED = {"SCS": {"max_iters": 60, "eps": 1e-12}, "CLARABEL": {"max_iter": 4}}


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_iteration_limit_returns_the_point_with_a_warning(solver):
    problem, A, x = norm_problem()
    prog = dpplayers.compile(problem, [A], [x], solver=solver)
    rng = np.random.default_rng(0)
    As = np.stack([rng.standard_normal((5, 5)) + 3 * np.eye(5) for _ in range(2)])
    with pytest.warns(dpplayers.InaccurateSolutionWarning,
                      match=r"batch elements \[0, 1\].*(max_iters|MaxIterations)"):
        sol = prog.solve(As, solver_args=LIMITED[solver])
    assert sol.status == (Status.ITERATION_LIMIT,) * 2
    assert not sol.accurate.any() and sol.ok.all()
    for k in range(2):  # an early stop, yet near the optimum (cvxpy's own tight solve)
        want, = cvxpy_values(problem, [A], [x], [As[k]])
        np.testing.assert_allclose(sol.values[0][k], want, atol=0.2)
    grad, = sol.vjp(np.ones((2, 5)))  # derivatives at the returned point, as cvxpylayers
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_inaccurate_fail_treats_an_early_stop_as_a_failure(solver):
    problem, A, x = norm_problem()
    prog = dpplayers.compile(problem, [A], [x], solver=solver)
    rng = np.random.default_rng(1)
    As = np.stack([rng.standard_normal((5, 5)) + 3 * np.eye(5) for _ in range(2)])
    with pytest.raises(SolverError, match="batch element 0 .*iteration limit"):
        prog.solve(As, solver_args=LIMITED[solver], inaccurate="fail")
    with pytest.raises(SolverError, match="iteration limit"):  # in solver_args too
        prog.solve(As[0], solver_args={**LIMITED[solver], "inaccurate": "fail"})
    with pytest.warns(RuntimeWarning, match="2 of 2 batch elements failed"):
        sol = prog.solve(As, solver_args=LIMITED[solver], inaccurate="fail", on_failure="nan")
    assert sol.status == (Status.ITERATION_LIMIT,) * 2 and not sol.ok.any()
    assert np.isnan(sol.values[0]).all() and np.isnan(sol.vjp(np.ones((2, 5)))[0]).all()
    with pytest.raises(ValueError, match="inaccurate must be one of"):
        prog.solve(As, inaccurate="ignore")


def test_an_accurate_solve_does_not_warn():
    problem, A, x = norm_problem()
    prog = dpplayers.compile(problem, [A], [x])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = prog.solve(np.eye(5) * 3, solver_args={"eps": 1e-9})
    assert sol.status == (Status.OPTIMAL,) and sol.accurate.all()


def test_infeasible_still_raises_with_inaccurate_warn():
    b = cp.Parameter(name="b")
    x = cp.Variable()
    prog = dpplayers.compile(cp.Problem(cp.Minimize(x), [x >= b, x <= 1]), [b], [x])
    with pytest.raises(SolverError, match="infeasible"):
        prog.solve(np.array([0.0, 2.0]), inaccurate="warn")


# -- item 11: SCS's linear-system back end never costs convergence ----------------------

def sigmoid_problem():
    """x = sigmoid(z) (closed form): maximise z·x + entr(x) + entr(1 − x)."""
    z = cp.Parameter(4, name="z")
    x = cp.Variable(4, name="x")
    problem = cp.Problem(cp.Maximize(z @ x + cp.sum(cp.entr(x) + cp.entr(1 - x))))
    return problem, z, x


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_scs_converges_at_tight_tolerances():
    """At eps 1e-10 QDLDL's unrefined solves stall SCS (max_iters; MKL or dense LAPACK:
    ~125 iterations): such tolerances get a refined back end."""
    problem, z, x = sigmoid_problem()
    prog = dpplayers.compile(problem, [z], [x])
    for seed in (0, 1):
        zs = np.random.default_rng(seed).standard_normal(4)
        sol = prog.solve(zs, solver_args={"eps": 1e-10, "max_iters": 5000})
        assert sol.status == (Status.OPTIMAL,) and sol.info[0]["iterations"] < 1000
        np.testing.assert_allclose(sol.values[0], sigmoid(zs), atol=1e-8)


def test_a_stalled_qdldl_solve_is_repeated_with_a_refined_back_end(monkeypatch):
    """Wherever dpplayers picked QDLDL itself and SCS stops short, the element is solved
    again with SCS's refined back end; a back end the user names is kept as it is."""
    from dpplayers._solve import backends as solvers

    monkeypatch.setattr(solvers, "QDLDL_MIN_EPS", 0.0)  # QDLDL even where it stalls
    problem, z, x = sigmoid_problem()
    prog = dpplayers.compile(problem, [z], [x])
    zs = np.random.default_rng(0).standard_normal((2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = prog.solve(zs, solver_args={"eps": 1e-10, "max_iters": 5000})
    assert sol.status == (Status.OPTIMAL,) * 2
    np.testing.assert_allclose(sol.values[0], sigmoid(zs), atol=1e-8)
    with pytest.warns(dpplayers.InaccurateSolutionWarning,
                      match=r"primal residual .*tolerances.*linear solver .*qdldl"):
        sol = prog.solve(zs, solver_args={"eps": 1e-10, "max_iters": 5000,
                                          "linear_solver": "qdldl"})
    # which elements stall is the CPU's business (seen: both on one machine, one on an
    # AVX-512 one); a stalled element is left as QDLDL stopped it, not solved again
    stalled = [i for i, s in enumerate(sol.status) if s is Status.ITERATION_LIMIT]
    assert stalled and all(s in (Status.OPTIMAL, Status.ITERATION_LIMIT) for s in sol.status)
    assert all(sol.info[i]["iterations"] == 5000 for i in stalled)


def test_layers_warn_on_an_iteration_limit_and_fail_on_request():
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    from dpplayers.jax import CvxpyLayer as JaxLayer
    from dpplayers.torch import CvxpyLayer as TorchLayer

    problem, A, x = norm_problem()
    A_val = np.random.default_rng(2).standard_normal((5, 5)) + 3 * np.eye(5)
    limit = LIMITED["SCS"]
    layer = TorchLayer(problem, [A], [x], solver_args=limit)
    A_t = torch.tensor(A_val, requires_grad=True)
    with pytest.warns(dpplayers.InaccurateSolutionWarning, match="max_iters"):
        (x_t,) = layer(A_t)
    x_t.sum().backward()
    assert torch.isfinite(A_t.grad).all()
    with pytest.raises(SolverError, match="iteration limit"):
        TorchLayer(problem, [A], [x], solver_args=limit, inaccurate="fail")(A_t)
    with pytest.raises(SolverError, match="iteration limit"):
        layer(A_t, solver_args={"inaccurate": "fail"})
    jax_layer = JaxLayer(problem, [A], [x], solver_args=limit)
    with pytest.warns(dpplayers.InaccurateSolutionWarning, match="max_iters"):
        (x_j,) = jax_layer(jnp.asarray(A_val))
    np.testing.assert_allclose(np.asarray(x_j), x_t.detach().numpy(), atol=1e-6)  # float32
    with pytest.raises(SolverError, match="iteration limit"):
        jax_layer(jnp.asarray(A_val), inaccurate="fail")


# -- item 17: cvxpylayers' solver_args are accepted, mapped, or ignored with a warning ----

def projection_problem():
    """x = clip(y, lo, 1): a closed form."""
    y, lo = cp.Parameter(3, name="y"), cp.Parameter(3, name="lo")
    x = cp.Variable(3, name="x")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [x >= lo, x <= 1])
    return problem, [y, lo], [x]


POINTS = [(np.array([2.0, 0.5, -3.0]), -np.ones(3)), (np.array([-0.2, 0.9, 4.0]), np.zeros(3))]

#: solver_args as cvxpylayers' README and examples pass them (diffcp's keywords included)
CVXPYLAYERS_ARGS = {"solve_method": "SCS", "n_jobs_forward": 1, "n_jobs_backward": 1,
                    "mode": "lsqr", "acceleration_lookback": 0, "eps": 1e-10,
                    "max_iters": 10_000, "verbose": False, "normalize": True}


def test_cvxpylayers_solver_args_are_accepted_and_mapped():
    torch = pytest.importorskip("torch")
    from dpplayers.torch import CvxpyLayer

    problem, parameters, variables = projection_problem()
    layer = CvxpyLayer(problem, parameters, variables, solver_args=CVXPYLAYERS_ARGS)
    with pytest.warns(UserWarning, match="'n_jobs_backward'") as record:
        for y, lo in POINTS:
            y_t = torch.tensor(y, requires_grad=True)
            (x_t,) = layer(y_t, torch.tensor(lo))
            np.testing.assert_allclose(x_t.detach().numpy(), np.clip(y, lo, 1), atol=1e-7)
            x_t.sum().backward()  # d clip / dy: 1 strictly inside the box, else 0
            inside = (y > lo) & (y < 1)
            np.testing.assert_allclose(y_t.grad.numpy(), inside.astype(float), atol=1e-6)
    assert sum("n_jobs_backward" in str(w.message) for w in record) == 1  # once per layer
    settings = layer.program.backend.settings_for({"acceleration_lookback": 0, "normalize": True})
    assert settings["acceleration_lookback"] == 0 and settings["normalize"] is True


@pytest.mark.parametrize("n_jobs_forward", [-1, 1, 2])
def test_n_jobs_forward_is_our_n_jobs(n_jobs_forward):
    problem, parameters, variables = projection_problem()
    prog = dpplayers.compile(problem, parameters, variables)
    ys = np.stack([POINTS[k % 2][0] for k in range(4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = prog.solve(ys, -np.ones(3), solver_args={"n_jobs_forward": n_jobs_forward,
                                                        "eps": 1e-9})
    np.testing.assert_allclose(sol.values[0], np.clip(ys, -1, 1), atol=1e-6)


def test_solve_method_names_the_solver_for_the_call():
    problem, parameters, variables = projection_problem()
    prog = dpplayers.compile(problem, parameters, variables)  # SCS
    for y, lo in POINTS:
        sol = prog.solve(y, lo, solver_args={"solve_method": "Clarabel"})
        assert sol.info[0]["status"] == "Solved"  # Clarabel's word; SCS says "solved"
        np.testing.assert_allclose(sol.values[0], np.clip(y, lo, 1), atol=1e-7)
        np.testing.assert_allclose(sol.jacobian()[0][0], np.diag(((y > lo) & (y < 1)) * 1.0),
                                   atol=1e-6)
    assert prog.solve(*POINTS[0], solver_args={"solve_method": "scs"}).info[0]["status"] == "solved"
    with pytest.warns(UserWarning, match="solve_method='ECOS'.*SCS"):
        sol = prog.solve(*POINTS[0], solver_args={"solve_method": "ECOS"})
    np.testing.assert_allclose(sol.values[0], np.clip(POINTS[0][0], -1, 1), atol=1e-6)


def test_diffcp_lpgd_mode_warns_and_gives_the_exact_derivative():
    problem, parameters, variables = projection_problem()
    prog = dpplayers.compile(problem, parameters, variables)
    y, lo = POINTS[0]
    with pytest.warns(UserWarning, match="mode='lpgd'"):
        sol = prog.solve(y, lo, solver_args={"mode": "lpgd"})
    np.testing.assert_allclose(sol.vjp(np.ones(3))[0], [0.0, 1.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_an_unknown_setting_is_refused_with_the_valid_keys(solver):
    problem, parameters, variables = projection_problem()
    prog = dpplayers.compile(problem, parameters, variables, solver=solver)
    with pytest.raises(ValueError, match=r"'tolerance'.*valid.*'eps'.*'n_jobs_forward'"):
        prog.solve(*POINTS[0], solver_args={"tolerance": 1e-3})


def test_scs_settings_are_ignored_by_clarabel_with_a_warning():
    problem, parameters, variables = projection_problem()
    prog = dpplayers.compile(problem, parameters, variables, solver="CLARABEL")
    with pytest.warns(UserWarning, match="'acceleration_lookback'.*Clarabel"):
        sol = prog.solve(*POINTS[1], solver_args={"acceleration_lookback": 0, "eps": 1e-9})
    np.testing.assert_allclose(sol.values[0], np.clip(POINTS[1][0], 0, 1), atol=1e-7)


def test_cvxpylayers_solver_names_and_verbose_are_accepted():
    """cvxpylayers 1.2's layers take solver="DIFFCP" (diffcp: SCS), cvxpy's solver names
    and verbose=; ours read them as SCS / Clarabel."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    import torch

    from dpplayers.jax import CvxpyLayer as JaxLayer
    from dpplayers.torch import CvxpyLayer as TorchLayer

    problem, parameters, variables = projection_problem()
    y, lo = POINTS[1]
    for Layer, to in ((TorchLayer, torch.tensor), (JaxLayer, np.asarray)):
        for name, used in (("DIFFCP", "SCS"), (cp.CLARABEL, "CLARABEL"), (None, "SCS")):
            layer = Layer(problem, parameters, variables, solver=name, verbose=False,
                          solver_args={"eps": 1e-9})
            assert layer.program.solver == used
            (x,) = layer(to(y), to(lo))
            np.testing.assert_allclose(np.asarray(x), np.clip(y, lo, 1), atol=1e-6)
    with pytest.raises(ValueError, match="solver must be one of.*SCS.*CLARABEL.*MOREAU"):
        TorchLayer(problem, parameters, variables, solver="MOREAU")
