"""SCS workspaces kept across solves (A and P constant, only b and c updated) must not cost
convergence (issue #17 item 11).

SCS 3's workspace carries its adapted step scale (and Anderson memory) from one solve to
the next. On a medium random LP the scale drifts and reused solves took 2-4 times the
iterations of fresh ones; on problems whose best scale is stable (the benchmarks' nearest
correlation matrix) the carried scale halves them. The first must not happen, the second
must be kept. Where A changes with the parameters (a fresh workspace per solve), or reuse
stopped, a fresh workspace starts from the scale the last solve ended at where that saves
iterations, and from SCS's default where it does not. Oracles: CVXPY's own fresh SCS solves
at the same tolerances (iteration counts and values), CVXPY's Clarabel solve for the SDP's
values.
"""

import warnings

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import Status

N_VARIABLES, N_ROWS, N_POINTS = 120, 300, 8
EPS = 1e-8  # dpplayers' SCS default (eps_abs = eps_rel)
CLARABEL_TIGHT = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}


def medium_lp(seed: int, scaled_rows: bool):
    """minimise cᵀx s.t. Ax <= b, -10 <= x <= 10 with A constant (random, rows optionally
    scaled over 3.5 decades); parameter values keep a known point strictly feasible."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((N_ROWS, N_VARIABLES))
    if scaled_rows:
        A *= np.exp(rng.uniform(-4, 4, size=(N_ROWS, 1)))
    x = cp.Variable(N_VARIABLES, name="x")
    c, b = cp.Parameter(N_VARIABLES, name="c"), cp.Parameter(N_ROWS, name="b")
    problem = cp.Problem(cp.Minimize(c @ x), [A @ x <= b, x >= -10, x <= 10])

    def values(point_rng: np.random.Generator) -> list[np.ndarray]:
        x0 = point_rng.uniform(-1, 1, N_VARIABLES)
        slack = point_rng.uniform(0.1, 1, N_ROWS)
        if scaled_rows:
            slack *= np.abs(A).sum(axis=1) / N_VARIABLES
        return [point_rng.standard_normal(N_VARIABLES), A @ x0 + slack]

    points = [values(np.random.default_rng((seed, k))) for k in range(N_POINTS)]
    return problem, [c, b], x, points


def cvxpy_scs(problem, parameters, values) -> tuple[int, np.ndarray]:
    """CVXPY's own fresh SCS solve at dpplayers' default tolerances: its iterations and x."""
    for p, v in zip(parameters, values):
        p.value = v
    problem.solve(solver=cp.SCS, eps_abs=EPS, eps_rel=EPS, max_iters=100_000)
    assert problem.status == cp.OPTIMAL
    return problem.solver_stats.num_iters, np.asarray(problem.variables()[0].value, float)


def assert_values(prog_x: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(prog_x, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed, scaled_rows", [(0, False), (2, False), (0, True)])
def test_repeated_single_solves_take_no_more_iterations_than_fresh_ones(seed, scaled_rows):
    problem, parameters, x, points = medium_lp(seed, scaled_rows)
    prog = dpplayers.compile(problem, parameters=parameters, variables=[x])
    iterations, reference = [], []
    for values in points:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no inaccurate solve, no iteration limit
            sol = prog.solve(*values)
        assert sol.status[0] is Status.OPTIMAL
        iterations.append(sol.info[0]["iterations"])
        cvxpy_iterations, cvxpy_x = cvxpy_scs(problem, parameters, values)
        reference.append(cvxpy_iterations)
        assert_values(sol.values[0], cvxpy_x)
    # Before the fix the reused workspace took 2.1-2.4 times CVXPY's iterations in all.
    assert sum(iterations) <= 1.5 * sum(reference), (iterations, reference)


def test_batch_in_one_thread_takes_no_more_iterations_than_fresh_solves():
    problem, parameters, x, points = medium_lp(0, False)
    prog = dpplayers.compile(problem, parameters=parameters, variables=[x])
    batch = [np.stack(column) for column in zip(*points)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = prog.solve(*batch, solver_args={"n_jobs": 1})  # one workspace for the batch
    iterations = [info["iterations"] for info in sol.info]
    reference = [cvxpy_scs(problem, parameters, values) for values in points]
    assert sum(iterations) <= 1.5 * sum(r[0] for r in reference), (iterations, reference)
    for k, (_, cvxpy_x) in enumerate(reference):
        assert_values(sol.values[0][k], cvxpy_x)


def test_reused_solve_that_stops_short_is_repeated_on_a_fresh_workspace():
    """With an iteration limit every fresh solve meets, a reused solve must not stop at it."""
    problem, parameters, x, points = medium_lp(0, False)
    reference = [cvxpy_scs(problem, parameters, values) for values in points]
    limit = int(1.25 * max(r[0] for r in reference))
    prog = dpplayers.compile(problem, parameters=parameters, variables=[x])
    for values, (_, cvxpy_x) in zip(points, reference):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sol = prog.solve(*values, solver_args={"max_iters": limit,
                                                   "linear_solver": "qdldl"})
        assert sol.status[0] is Status.OPTIMAL
        assert_values(sol.values[0], cvxpy_x)


def test_reuse_is_kept_where_the_carried_scale_helps():
    """Nearest correlation matrix (the benchmarks' ncm): every solve after the first runs
    on the kept workspace and takes fewer iterations than the first, fresh one."""
    rng = np.random.default_rng(5)
    X = cp.Variable((10, 10), symmetric=True)
    C = cp.Parameter((10, 10), name="C")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.diag(X) == 1])
    prog = dpplayers.compile(problem, parameters=[C], variables=[X])
    iterations = []
    for _ in range(6):
        N = rng.standard_normal((10, 10))
        value = 0.3 * (N + N.T) + np.eye(10)
        sol = prog.solve(value)
        iterations.append(sol.info[0]["iterations"])
        C.value = value
        problem.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
        np.testing.assert_allclose(sol.values[0], X.value, atol=2e-5)
    assert max(iterations[1:]) < iterations[0], iterations


def box_design():
    """The benchmarks' gp_box: a GP whose kept workspace (its adapted scale) saves iterations
    on average, though one reused solve in a few hundred takes more than fresh ones."""
    h, w, d = (cp.Variable(pos=True) for _ in range(3))
    A_wall, A_flr, alpha, beta = (cp.Parameter(pos=True) for _ in range(4))
    problem = cp.Problem(cp.Maximize(h * w * d), [2 * (h * w + h * d) <= A_wall,
                                                  w * d <= A_flr, alpha <= h / w, h / w <= beta])
    return problem, [A_wall, A_flr, alpha, beta], h


def test_one_slow_reused_solve_does_not_end_reuse_that_helps():
    """A slow reused solve is excused while reused solves are faster on average: on gp_box
    one slow reused solve ended reuse for good and every later solve took the fresh
    iterations (before: 1.13 times CVXPY's fresh solves in all; now 0.75-0.79)."""
    problem, parameters, h = box_design()
    prog = dpplayers.compile(problem, parameters=parameters, variables=[h], gp=True)
    rng = np.random.default_rng(3)
    iterations, reference = [], []
    for _ in range(30):
        values = [rng.uniform(80, 120, 8), rng.uniform(8, 12, 8), rng.uniform(0.4, 0.6, 8),
                  rng.uniform(1.8, 2.2, 8)]
        sol = prog.solve(*values, solver_args={"eps": 1e-10, "n_jobs": 1})
        iterations += [info["iterations"] for info in sol.info]
        k = len(iterations) % 8
        for p, v in zip(parameters, values):
            p.value = v[k]
        problem.solve(gp=True, solver=cp.SCS, eps_abs=1e-10, eps_rel=1e-10, max_iters=100_000)
        reference.append(problem.solver_stats.num_iters)
        np.testing.assert_allclose(sol.values[0][k], h.value, rtol=1e-6)
    assert np.mean(iterations) <= 0.9 * np.mean(reference), (np.mean(iterations),
                                                             np.mean(reference))


def cubic_fit(m: int = 50, n: int = 20):
    """Σ|F x − g|³ + ½‖x‖² with power cones (the benchmarks' pnorm): F is a parameter, so
    every solve sets up a fresh workspace."""
    x, t = cp.Variable(n, name="x"), cp.Variable(m, name="t")
    F, g = cp.Parameter((m, n), name="F"), cp.Parameter(m, name="g")
    problem = cp.Problem(cp.Minimize(cp.sum(t) + 0.5 * cp.sum_squares(x)),
                         [cp.constraints.PowCone3D(t, np.ones(m), F @ x - g, 1.0 / 3.0)])
    return problem, [F, g], x, lambda rng: [rng.standard_normal((m, n)) / np.sqrt(m),
                                            rng.standard_normal(m)]


def halfspace_lp(n: int = 20, m: int = 200):
    """The benchmarks' lp_inactive: an LP over m random halfspaces in a box, G a parameter.
    SCS's best scale varies ~7x from one draw to the next: starting from the last one costs
    iterations (1.28-1.33 times CVXPY's on 32 draws when always carried)."""
    x = cp.Variable(n, name="x")
    c, G, h = (cp.Parameter(n, name="c"), cp.Parameter((m, n), name="G"),
               cp.Parameter(m, name="h"))
    problem = cp.Problem(cp.Minimize(c @ x), [G @ x <= h, x <= 10, x >= -10])
    return problem, [c, G, h], x, lambda rng: [rng.standard_normal(n),
                                               rng.standard_normal((m, n)),
                                               rng.uniform(1, 2, m)]


def iterations_against_cvxpy(build, draws: int = 32) -> tuple[int, int]:
    """Sequential single solves: dpplayers' iterations and CVXPY's fresh SCS solves', in all;
    every value checked against CVXPY's."""
    problem, parameters, x, draw = build()
    prog = dpplayers.compile(problem, parameters=parameters, variables=[x])
    rng = np.random.default_rng(0)
    ours = theirs = 0
    for _ in range(draws):
        values = draw(rng)
        sol = prog.solve(*values)
        assert sol.status[0] is Status.OPTIMAL
        cvxpy_iterations, _ = cvxpy_scs(problem, parameters, values)
        assert_values(sol.values[0], x.value)
        ours, theirs = ours + sol.info[0]["iterations"], theirs + cvxpy_iterations
    return ours, theirs


def test_a_fresh_workspace_starts_from_the_last_scale_where_that_saves_iterations():
    ours, theirs = iterations_against_cvxpy(cubic_fit)
    # SCS's default start each time: 0.96-0.98 of CVXPY's; the carried scale: 0.64-0.73
    assert ours <= 0.85 * theirs, (ours, theirs)


def test_the_default_scale_is_kept_where_the_carried_one_costs_iterations():
    ours, theirs = iterations_against_cvxpy(halfspace_lp)
    # the default start each time: 0.99-1.04; with the trials: 1.01-1.07; always carried: 1.28-1.33
    assert ours <= 1.15 * theirs, (ours, theirs)


def sparsemax(n: int = 100):
    """The Euclidean projection onto the simplex (the benchmarks' sparsemax): A constant, so
    the workspace is kept; reused solves take ~218 iterations against fresh ones' ~173 from
    SCS's default scale and ~89 from the carried one."""
    x, y = cp.Variable(n, name="x"), cp.Parameter(n, name="y")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0])
    return problem, [y], x, lambda rng: [rng.standard_normal(n)]


def test_fresh_solves_after_reuse_stopped_start_from_the_carried_scale():
    ours, theirs = iterations_against_cvxpy(sparsemax, draws=60)
    # reuse stops at a slow reused solve; fresh solves from SCS's default scale then took
    # 1.22 times CVXPY's iterations in all, from the carried one 0.64
    assert ours <= 0.9 * theirs, (ours, theirs)


def test_a_slow_reused_solve_against_a_thin_baseline_does_not_end_reuse():
    """gp_box at the default tolerance, 7 draws cycled (the benchmarks' draws): the first
    draw's fresh solve takes 125 iterations, the mean ~150, and a reused solve of 200
    ended reuse for good (1.20 times CVXPY's fresh iterations); excused while the fresh
    mean rests on fewer than three solves, the workspace is rebuilt from the carried scale
    and kept (0.82)."""
    problem, parameters, h = box_design()
    prog = dpplayers.compile(problem, parameters=parameters, variables=[h], gp=True)

    def draw(d: int) -> list[float]:
        rng = np.random.default_rng((14, d))
        return [rng.uniform(80, 120), rng.uniform(8, 12), rng.uniform(0.4, 0.6),
                rng.uniform(1.8, 2.2)]

    draws = [draw(d) for d in range(7)]
    reference = []
    for values in draws:
        for p, v in zip(parameters, values):
            p.value = v
        problem.solve(gp=True, solver=cp.SCS, eps_abs=EPS, eps_rel=EPS, max_iters=100_000)
        reference.append((problem.solver_stats.num_iters, h.value))
    iterations = []
    for k in range(42):
        sol = prog.solve(*draws[k % 7])
        iterations.append(sol.info[0]["iterations"])
        np.testing.assert_allclose(sol.values[0], reference[k % 7][1], rtol=1e-5)
    mean_reference = np.mean([r[0] for r in reference])
    assert np.mean(iterations) <= 0.9 * mean_reference, (iterations, mean_reference)
