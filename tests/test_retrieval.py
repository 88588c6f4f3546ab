"""The retrieval R on variables with attributes (issue #17 items 1, 4, 10).

cvxpy's ``Chain.invert`` projects leaves onto their attributes (``nonpos``, ``bounds``...),
which is not linear; R must nevertheless be the exact linear map from the solver's (x, y)
to the user's variables and duals. Each problem is compiled with its parameters unset and
checked at two parameter points, with both solvers: values and duals against CVXPY's own
solve, jvp against central finite differences of refined solves, vjp by the dot-product
identity.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
import dpplayers._compile.retrieval as retrieval_module
from dpplayers.errors import ParameterError, VariableError

SOLVERS = ("SCS", "CLARABEL")
ARGS = {
    "SCS": {"eps": 1e-10, "max_iters": 100_000},
    "CLARABEL": {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "max_iter": 500},
}
#: Finite differences need solutions accurate far beyond the step: Newton-polish them.
REFINE = 3
FD_STEP = 1e-5


#: CVXPY's own solve as the oracle: Clarabel, or SCS where Clarabel stops near 1e-6 (SDPs).
ORACLES = {
    "CLARABEL": {"solver": cp.CLARABEL, "tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10,
                 "tol_feas": 1e-10},
    "SCS": {"solver": cp.SCS, "eps": 1e-12, "max_iters": 200_000},
}


def cvxpy_solution(problem, params, values, outputs, oracle="CLARABEL"):
    """CVXPY's own answer (tight): each output's value, dense."""
    for p, v in zip(params, values):
        p.value = v
    problem.solve(**ORACLES[oracle])
    out = []
    for o in outputs:
        value = o.value_sparse if getattr(o, "sparse_idx", None) is not None else o.value
        value = value.toarray() if hasattr(value, "toarray") else value
        out.append(np.asarray(value, dtype=float))
    for p in params:
        p.value = None  # the layer must not read values set on the problem
    return out


def structured(param, d):
    """A tangent that keeps a symmetric parameter symmetric."""
    return (d + d.T) / 2 if param.attributes.get("symmetric") else d


def finite_differences(prog, values, dirs, solver):
    args = {**ARGS[solver], "refine": REFINE}
    plus = prog.solve(*[v + FD_STEP * d for v, d in zip(values, dirs)], solver_args=args).values
    minus = prog.solve(*[v - FD_STEP * d for v, d in zip(values, dirs)], solver_args=args).values
    return [(a - b) / (2 * FD_STEP) for a, b in zip(plus, minus)]


def check_problem(problem, params, outputs, points, solvers=SOLVERS, seed=0, oracle="CLARABEL"):
    """Values, duals and derivatives of the layer against CVXPY and finite differences."""
    assert all(p.value is None for p in params)
    progs = {s: dpplayers.compile(problem, params, outputs, solver=s) for s in solvers}
    rng = np.random.default_rng(seed)
    for values in points:
        values = [np.asarray(v, dtype=float) for v in values]
        expected = cvxpy_solution(problem, params, values, outputs, oracle)
        for solver, prog in progs.items():
            sol = prog.solve(*values, solver_args={**ARGS[solver], "refine": REFINE})
            for got, want, o in zip(sol.values, expected, outputs):
                np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-6,
                                           err_msg=f"{solver}: {o.name()}")
            dirs = [structured(p, rng.standard_normal(p.shape)) for p in params]
            tangents = sol.jvp(*dirs)
            fd = finite_differences(prog, values, dirs, solver)
            for got, want, o in zip(tangents, fd, outputs):
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4,
                                           err_msg=f"{solver}: d {o.name()}")
            ws = [rng.standard_normal(np.shape(v)) for v in sol.values]
            lhs = sum(float(np.sum(g * d)) for g, d in zip(sol.vjp(*ws), dirs))
            rhs = sum(float(np.sum(w * t)) for w, t in zip(ws, tangents))
            assert abs(lhs - rhs) <= 1e-8 * max(1.0, abs(rhs)), (solver, lhs, rhs)
    return progs


def projection_problem(x, shape=(3,)):
    p = cp.Parameter(shape, name="p")
    return cp.Problem(cp.Minimize(cp.sum_squares(x - p))), p


POINTS_3 = [[np.array([1.0, -2.0, 0.3])], [np.array([-0.7, 0.2, 1.5])]]


# ------------------------------------------------------------------- item 1: sign and bounds


def test_nonpos_variable_issue_example():
    """The issue's example: p = (1, −2, 0.3) gives (0, −2, 0) with dx/dp = diag(0, 1, 0)."""
    x = cp.Variable(3, nonpos=True)
    problem, p = projection_problem(x)
    progs = check_problem(problem, [p], [x], POINTS_3)
    for prog in progs.values():
        sol = prog.solve(np.array([1.0, -2.0, 0.3]), solver_args={"refine": REFINE})
        np.testing.assert_allclose(sol.values[0], [0.0, -2.0, 0.0], atol=1e-7)
        np.testing.assert_allclose(sol.jacobian()[0][0], np.diag([0.0, 1.0, 0.0]), atol=1e-7)


@pytest.mark.parametrize("attribute", ["nonpos", "neg", "nonneg", "pos"])
def test_sign_attribute_variables(attribute):
    x = cp.Variable(3, **{attribute: True})
    problem, p = projection_problem(x)
    check_problem(problem, [p], [x], POINTS_3)


@pytest.mark.parametrize("bounds", [
    [-0.5, 0.5],
    [np.array([-1.0, -0.5, 0.0]), np.array([0.5, 1.0, 0.1])],
    [None, 0.25],
    [-0.25, None],
], ids=["scalar", "array", "upper-only", "lower-only"])
def test_bounded_variables(bounds):
    """bounds=[-0.5, 0.5] with p = (1, −2, 0.3) gives (0.5, −0.5, 0.3), not (0.25, −0.25, 0.15)."""
    x = cp.Variable(3, bounds=bounds)
    problem, p = projection_problem(x)
    check_problem(problem, [p], [x], POINTS_3)


def test_parametric_bounds():
    lo = cp.Parameter(3, name="lo")
    x = cp.Variable(3, bounds=[lo, 1.0])
    problem, p = projection_problem(x)
    points = [[np.array([-1.0, 0.0, 0.5]), np.array([-2.0, 0.3, 0.2])],
              [np.array([0.2, -0.6, -1.0]), np.array([0.1, 2.0, -0.3])]]
    check_problem(problem, [lo, p], [x], points)


def test_duals_of_constraints_on_attribute_variables():
    """Duals of user constraints on nonpos and bounded variables, with both kinds of output."""
    x = cp.Variable(3, nonpos=True)
    w = cp.Variable(2, bounds=[-1.0, 1.0])
    p, lo, s = cp.Parameter(3, name="p"), cp.Parameter(3, name="lo"), cp.Parameter(name="s")
    floor, total = x >= lo, cp.sum(w) == s
    problem = cp.Problem(
        cp.Minimize(cp.sum_squares(x - p) + cp.sum_squares(w - np.array([0.3, -2.0]))),
        [floor, total],
    )
    outputs = [x, w, floor.dual_variables[0], total.dual_variables[0]]
    points = [[np.array([1.0, -2.0, -0.3]), np.array([-1.0, -1.0, -0.1]), np.array(0.4)],
              [np.array([-0.5, -3.0, 0.2]), np.array([-1.0, -2.0, -1.0]), np.array(-0.2)]]
    check_problem(problem, [p, lo, s], outputs, points)


def test_maximize_with_attribute_variables_and_a_dual():
    x, w = cp.Variable(3, nonpos=True), cp.Variable(3, bounds=[-1.0, 2.0])
    p, q = cp.Parameter(3, name="p"), cp.Parameter(3, name="q")
    joint = x + w <= q
    problem = cp.Problem(cp.Maximize(-cp.sum_squares(x - p) - cp.sum_squares(w + p)), [joint])
    points = [[np.array([1.3, -1.7, 0.3]), np.array([0.5, 0.1, -0.2])],
              [np.array([-1.2, 0.4, 2.5]), np.array([-0.5, 1.1, 0.2])]]
    check_problem(problem, [p, q], [x, w, joint.dual_variables[0]], points)


def test_torch_layer_gradcheck_on_a_nonpos_variable():
    torch = pytest.importorskip("torch")
    from dpplayers.torch import CvxpyLayer

    x = cp.Variable(3, nonpos=True)
    problem, p = projection_problem(x)
    layer = CvxpyLayer(problem, parameters=[p], variables=[x])
    args = {"eps": 1e-10, "refine": REFINE}
    for value in ([1.0, -2.0, 0.3], [-0.7, 0.2, -1.5]):
        theta = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        (out,) = layer(theta, solver_args=args)
        np.testing.assert_allclose(out.detach().numpy(), np.minimum(value, 0.0), atol=1e-8)
        assert torch.autograd.gradcheck(lambda t: layer(t, solver_args=args)[0], (theta,),
                                        atol=1e-5)


# ------------------------------------------------------------------- item 10: diag=True


def test_diag_variable_least_squares():
    D = cp.Variable((3, 3), diag=True)
    P, c = cp.Parameter((3, 3), name="P"), cp.Parameter(3, name="c")
    floor = cp.diag(D) >= -0.2
    problem = cp.Problem(cp.Minimize(cp.sum_squares(D - P) + c @ cp.diag(D)), [floor])
    rng = np.random.default_rng(3)
    points = [[rng.standard_normal((3, 3)), np.array([0.5, 3.0, -1.0])] for _ in range(2)]
    check_problem(problem, [P, c], [D, floor.dual_variables[0]], points)


def test_diag_variable_in_an_sdp():
    """D diagonal with D ⪰ S: a PSD constraint on a diag variable, its dual an output."""
    D = cp.Variable((3, 3), diag=True)
    S = cp.Parameter((3, 3), symmetric=True, name="S")
    c = cp.Parameter(3, name="c")
    psd = D - S >> 0
    problem = cp.Problem(cp.Minimize(c @ cp.diag(D) + cp.sum_squares(cp.diag(D))), [psd])
    rng = np.random.default_rng(4)

    def sym(n):
        a = rng.standard_normal((n, n))
        return (a + a.T) / 2

    points = [[sym(3), np.array([1.0, 0.5, 2.0])], [sym(3), np.array([-0.3, 1.0, 0.2])]]
    check_problem(problem, [S, c], [D, psd.dual_variables[0]], points, oracle="SCS")


# ------------------------------------------------------------ symmetric, PSD, NSD, sparsity


@pytest.mark.parametrize("attribute", ["symmetric", "PSD", "NSD"])
def test_symmetric_family_variables(attribute):
    X = cp.Variable((3, 3), **{attribute: True})
    P = cp.Parameter((3, 3), name="P")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(X - P)), [cp.trace(X) <= 10.0])
    rng = np.random.default_rng(5)
    points = [[rng.standard_normal((3, 3))], [rng.standard_normal((3, 3)) + 2 * np.eye(3)]]
    check_problem(problem, [P], [X], points)


def test_sparsity_variable():
    X = cp.Variable((3, 3), sparsity=[(0, 1, 2), (1, 2, 0)])
    P = cp.Parameter((3, 3), name="P")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(X - P)), [X >= -0.5])
    rng = np.random.default_rng(6)
    points = [[rng.standard_normal((3, 3))] for _ in range(2)]
    with pytest.warns(RuntimeWarning, match="value_sparse"):  # cvxpy's own, at compile
        check_problem(problem, [P], [X], points)


# --------------------------------------------------------------- R must be verified exact


def test_a_nonlinear_inversion_is_refused_by_name(monkeypatch):
    """Had R been read through cvxpy's projecting inversion, build_retrieval must refuse,
    naming the variable, instead of returning a wrong map (the check probes both signs)."""
    def projecting(chain, solution, inverse_data):
        return chain.invert(solution, inverse_data)

    monkeypatch.setattr(retrieval_module, "_invert_linearly", projecting)
    x = cp.Variable(3, nonpos=True, name="x_neg")
    problem, _ = projection_problem(x)
    with pytest.raises(VariableError, match="x_neg"):
        dpplayers.compile(problem)


# ---------------------------------------------------------------------- item 4: complex


def test_complex_parameter_is_refused_by_name():
    p = cp.Parameter(2, complex=True, name="p_complex")
    x = cp.Variable(2, complex=True)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(cp.abs(x - p))))
    with pytest.raises(ParameterError, match="p_complex"):
        dpplayers.compile(problem, [p], [x])


@pytest.mark.parametrize("attribute", ["complex", "imag"])
def test_complex_variable_is_refused_by_name(attribute):
    x = cp.Variable(2, name="z", **{attribute: True})
    p = cp.Parameter(2, name="p")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(cp.abs(x - 1j * p))))
    with pytest.raises(VariableError, match="'z'"):
        dpplayers.compile(problem, [p], [x])


def test_hermitian_variable_is_refused_by_name():
    X = cp.Variable((2, 2), hermitian=True, name="H")
    Q = cp.Parameter((2, 2), name="Q")
    problem = cp.Problem(cp.Minimize(cp.real(cp.trace(Q @ X))),
                         [X >> 0, cp.real(cp.trace(X)) == 1])
    with pytest.raises(VariableError, match="'H'"):
        dpplayers.compile(problem, [Q], [X])


def test_complex_constraint_dual_is_refused_by_name():
    x, p = cp.Variable(2), cp.Parameter(2, name="p")
    con = (1 + 1j) * x == (1 + 1j) * p
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x)), [con])
    with pytest.raises(VariableError, match="dual"):
        dpplayers.compile(problem, [p], [x, con.dual_variables[0]])


def test_complex_constants_with_real_leaves_are_exact():
    """Complex data, real variables and parameters: cvxpy's Complex2Real is exact and the
    outputs are real, so this is supported (values and derivatives checked)."""
    x, p = cp.Variable(2), cp.Parameter(2, name="p")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(cp.abs((1 + 2j) * x - p)) + cp.sum(x)))
    points = [[np.array([1.0, 2.0])], [np.array([-0.5, 0.3])]]
    check_problem(problem, [p], [x], points)


def test_unrequested_complex_variable_leaves_real_outputs_exact():
    """A complex variable that is not an output is split exactly by cvxpy's Complex2Real."""
    x, z = cp.Variable(2), cp.Variable(2, complex=True)
    p = cp.Parameter(2, name="p")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - p) + cp.sum_squares(cp.abs(z - x))
                                     + cp.sum_squares(cp.imag(z) - 1.0)))
    points = [[np.array([1.0, 2.0])], [np.array([-0.5, 0.3])]]
    check_problem(problem, [p], [x], points)
