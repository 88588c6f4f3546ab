"""Every bad-input and failure path raises a clear, specific error (or NaN on request)."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import DPPError, ParameterError, SolverError, Status, VariableError
from dpplayers._compile.parameters import DEFINITE_EACH_MIN_ORDER


@pytest.fixture
def lp():
    A = cp.Parameter((2, 3), name="A")
    b = cp.Parameter(2, name="b")
    x = cp.Variable(3, name="x")
    prob = cp.Problem(cp.Minimize(cp.sum(x)), [A @ x <= b, x >= 0])
    return prob, A, b, x


def test_wrong_number_of_values(lp):
    prob, A, b, x = lp
    prog = dpplayers.compile(prob, [A, b], [x])
    with pytest.raises(ParameterError, match=r"expected 2 parameter values \(A, b\), got 1"):
        prog.solve(np.ones((2, 3)))


def test_wrong_shape_names_parameter(lp):
    prob, A, b, x = lp
    prog = dpplayers.compile(prob, [A, b], [x])
    with pytest.raises(ParameterError, match=r"parameter 'A' expects shape \(2, 3\).*got shape \(3, 2\)"):
        prog.solve(np.ones((3, 2)), np.ones(2))


def test_inconsistent_batch_sizes(lp):
    prob, A, b, x = lp
    prog = dpplayers.compile(prob, [A, b], [x])
    with pytest.raises(ParameterError, match="Inconsistent batch sizes: parameter 'b' has batch "
                       "size 3 but parameter 'A' has 2"):
        prog.solve(np.ones((2, 2, 3)), np.ones((3, 2)))


def test_nan_names_parameter_and_batch_element(lp):
    prob, A, b, x = lp
    prog = dpplayers.compile(prob, [A, b], [x])
    bad = np.ones((4, 2))
    bad[2, 1] = np.nan
    with pytest.raises(ParameterError, match="parameter 'b' has NaN or Inf entries in batch element 2"):
        prog.solve(np.ones((2, 3)), bad)
    with pytest.raises(ParameterError, match="parameter 'A' has NaN or Inf entries"):
        prog.solve(np.full((2, 3), np.inf), np.ones(2))


@pytest.mark.parametrize(
    "attrs, value, message",
    [
        ({"nonneg": True}, -np.ones(2), "must be nonnegative"),
        ({"pos": True}, -np.ones(2), "must be positive"),  # 0 is allowed, as in CVXPY
        ({"nonpos": True}, np.ones(2), "must be nonpositive"),
    ],
)
def test_sign_attributes(attrs, value, message):
    c = cp.Parameter(2, name="c", **attrs)
    x = cp.Variable(2)
    prob = cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x)))
    prog = dpplayers.compile(prob, [c], [x])
    with pytest.raises(ParameterError, match=f"parameter 'c' {message}"):
        prog.solve(value)


def test_symmetric_and_psd_attributes():
    S = cp.Parameter((2, 2), symmetric=True, name="S")
    Q = cp.Parameter((2, 2), PSD=True, name="Q")
    X = cp.Variable((2, 2))
    prob = cp.Problem(cp.Minimize(cp.trace(S @ X) + cp.trace(Q @ X) + cp.sum_squares(X)))
    prog = dpplayers.compile(prob, [S, Q], [X])
    # issue #17 item 14: an asymmetric value is symmetrised with a warning, not refused
    with pytest.warns(UserWarning, match="parameter 'S' is declared symmetric but its value"):
        prog.solve(np.array([[1.0, 2.0], [0.0, 1.0]]), np.eye(2))
    with pytest.raises(ParameterError, match=r"parameter 'Q' \(batch element 1\) is declared PSD"):
        prog.solve(np.eye(2), np.stack([np.eye(2), -np.eye(2)]))
    # one element goes through LAPACK's Cholesky directly: indefinite, and PSD but singular
    with pytest.raises(ParameterError, match=r"parameter 'Q' is declared PSD.*-1"):
        prog.solve(np.eye(2), np.array([[1.0, 0.0], [0.0, -1.0]]))
    Q = np.array([[1.0, 1.0], [1.0, 1.0]])  # eigenvalues 0 and 2: accepted, and unchanged
    prog.solve(np.eye(2), Q)
    np.testing.assert_array_equal(Q, [[1.0, 1.0], [1.0, 1.0]])

def test_psd_attribute_of_large_matrices_in_a_batch():
    """Batched values of DEFINITE_EACH_MIN_ORDER and more are factorised one by one by
    LAPACK: the culprit is still named, a PSD but singular element and an asymmetric one
    whose symmetric part is PSD are accepted, and no value is changed."""
    n = DEFINITE_EACH_MIN_ORDER
    Q = cp.Parameter((n, n), PSD=True, name="Q")
    x = cp.Variable(n)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.quad_form(x, Q) + cp.sum(x)),
                                        [x >= -1, x <= 1]), [Q], [x])
    rng = np.random.default_rng(0)
    F = rng.standard_normal((4, n, n - 1))
    good = F @ F.transpose(0, 2, 1)  # PSD, each singular (rank n − 1)
    U = rng.standard_normal((n, n))
    good[2] += 1e-3 * (U - U.T)  # asymmetric; its symmetric part is PSD
    bad = good.copy()
    vals, vecs = np.linalg.eigh(0.5 * (bad[3] + bad[3].T))
    bad[3] -= (vals[0] + 1e-2) * np.outer(vecs[:, 0], vecs[:, 0])  # eigenvalue −1e-2
    kept = good.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # element 2's asymmetry
        sol = prog.solve(good)
    np.testing.assert_array_equal(good, kept)
    assert np.isfinite(sol.values[0]).all()
    with pytest.raises(ParameterError, match=r"parameter 'Q' \(batch element 3\) is declared "
                                             r"PSD but its extreme eigenvalue is -0.01"):
        prog.solve(bad)



def infeasible_problem():
    b = cp.Parameter(name="b")
    x = cp.Variable()
    return cp.Problem(cp.Minimize(x), [x >= b, x <= 1]), b, x


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_infeasible_element_named(solver):
    prob, b, x = infeasible_problem()
    prog = dpplayers.compile(prob, [b], [x], solver=solver)
    with pytest.raises(SolverError, match="failed on batch element 1 .*infeasible"):
        prog.solve(np.array([0.0, 2.0, 0.5]))


def test_solver_error_is_diffcp_solver_error():
    import diffcp

    assert issubclass(SolverError, diffcp.SolverError)


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_unbounded_element_named(solver):
    c = cp.Parameter(name="c")
    x = cp.Variable()
    prob = cp.Problem(cp.Minimize(c * x), [x >= 0])
    prog = dpplayers.compile(prob, [c], [x], solver=solver)
    with pytest.raises(SolverError, match="failed on batch element 0 .*unbounded"):
        prog.solve(np.array([-1.0, 1.0]))


def test_iteration_limit_named():
    """An iteration limit warns and returns the point (as CVXPY); inaccurate="fail" raises."""
    A = cp.Parameter((5, 5), name="A")
    x = cp.Variable(5)
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - 1) + cp.norm(x, 1)))
    prog = dpplayers.compile(prob, [A], [x])
    A_val = np.random.default_rng(0).standard_normal((5, 5))
    with pytest.warns(dpplayers.InaccurateSolutionWarning, match="iteration limit"):
        prog.solve(A_val, solver_args={"max_iters": 2, "eps": 1e-12})
    with pytest.raises(SolverError, match="iteration limit"):
        prog.solve(A_val, solver_args={"max_iters": 2, "eps": 1e-12}, inaccurate="fail")


def test_on_failure_nan_flags_element():
    prob, b, x = infeasible_problem()
    prog = dpplayers.compile(prob, [b], [x])
    with pytest.warns(RuntimeWarning, match="1 of 3 batch elements failed"):
        sol = prog.solve(np.array([0.0, 2.0, 0.5]), on_failure="nan")
    assert np.isnan(sol.values[0][1]) and np.isfinite(sol.values[0][[0, 2]]).all()
    assert sol.status[1] is Status.INFEASIBLE and sol.status[0] is Status.OPTIMAL
    grad, = sol.vjp(np.ones(3))
    assert np.isnan(grad[1]) and np.isfinite(grad[[0, 2]]).all()


def test_bad_policy_and_mode(lp):
    prob, A, b, x = lp
    prog = dpplayers.compile(prob, [A, b], [x])
    with pytest.raises(ValueError, match="on_failure must be one of"):
        prog.solve(np.ones((2, 3)), np.ones(2), on_failure="ignore")
    with pytest.raises(ValueError, match="derivative mode must be one of"):
        prog.solve(np.ones((2, 3)), np.ones(2), solver_args={"mode": "qr"})
    with pytest.raises(ValueError, match="mode must be one of"):
        dpplayers.compile(prob, [A, b], [x], mode="qr")
    with pytest.raises(ValueError, match="solver must be one of"):
        dpplayers.compile(prob, [A, b], [x], solver="ECOS")


def test_unknown_clarabel_setting(lp):
    prob, A, b, x = lp
    prog = dpplayers.compile(prob, [A, b], [x], solver="CLARABEL")
    with pytest.raises(ValueError, match="unknown Clarabel setting 'tolerance'"):
        prog.solve(np.ones((2, 3)), np.ones(2), solver_args={"tolerance": 1e-3})


def test_non_dpp_raises_dpp_error():
    a, b = cp.Parameter(name="a"), cp.Parameter(name="b")
    x = cp.Variable()
    prob = cp.Problem(cp.Minimize(a * b * x + cp.square(x)))
    with pytest.raises(DPPError, match="a @ b|a \\* b"):
        dpplayers.compile(prob, [a, b], [x])


def test_missing_parameter_and_foreign_variable(lp):
    prob, A, b, x = lp
    with pytest.raises(DPPError, match="b"):
        dpplayers.compile(prob, [A], [x])
    y = cp.Variable(2, name="y")
    with pytest.raises((DPPError, VariableError), match="y"):
        dpplayers.compile(prob, [A, b], [y])


def test_warm_start_from_other_program(lp):
    prob, A, b, x = lp
    p1 = dpplayers.compile(prob, [A, b], [x])
    p2 = dpplayers.compile(prob, [A, b], [x])
    sol = p1.solve(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="warm_start must be a Solution returned by this"):
        p2.solve(np.ones((2, 3)), np.ones(2), warm_start=sol)


def test_wrong_cotangent_shape(lp):
    prob, A, b, x = lp
    prog = dpplayers.compile(prob, [A, b], [x])
    sol = prog.solve(np.ones((2, 3)), np.ones(2))
    with pytest.raises(dpplayers.DerivativeError, match=r"cotangent for 'x' expects shape \(3,\), got \(2,\)"):
        sol.vjp(np.ones(2))
    with pytest.raises(ParameterError, match=r"tangent for parameter 'b' expects shape \(2,\)"):
        sol.jvp(np.ones((2, 3)), np.ones(3))
