"""The solver layer: Clarabel workspaces that refuse updates, SCS's linear-system back end,
inaccurate solves (warn, or fail on request) and cvxpylayers' solver_args spellings."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import SolverError, Status

CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}


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
