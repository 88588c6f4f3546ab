"""gp=True (log-log convex programs): values, duals and derivatives against CVXPY's own gp
solve and central finite differences, with parameters as coefficients (they enter the cone
program through their log) and as exponents (they enter linearly, any sign), or both.

Every case is compiled with its parameter values unset and checked at two or more
parameter points; derivative oracles are finite differences of refined dpplayers solves
and of CVXPY's own gp re-solves (independent of dpplayers)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np
import pytest

import dpplayers

#: Clarabel (dpplayers) at tight tolerances, Newton-polished: accurate far below FD steps.
REFINED = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11, "max_iter": 500,
           "refine": 3}
#: Each solver at its most accurate: Clarabel stops ~1e-6 off on exponential cones even at
#: tight tolerances, so it is Newton-polished; SCS at eps 1e-10 is within ~1e-10.
TIGHT_ARGS = {"CLARABEL": REFINED, "SCS": {"eps": 1e-10, "max_iters": 200_000}}
SOLVERS = ("SCS", "CLARABEL")
#: CVXPY's own gp solve, the independent oracle. On the exponential cones a gp compiles to,
#: SCS without Anderson acceleration at eps 1e-10 is within ~2e-10 of the solution and
#: quick (Clarabel stops ~1e-6 off; SCS with acceleration, or at eps 1e-12, can stall);
#: steps of 1e-4 then give differences accurate to ~1e-6.
CVXPY_ARGS = {"solver": cp.SCS, "eps_abs": 1e-10, "eps_rel": 1e-10, "max_iters": 100_000,
              "acceleration_lookback": 0}
CVXPY_STEP = 1e-4


@dataclass
class GPCase:
    """A DGP problem, its parameters (values unset), what to read (variables, or
    constraints for their duals) and parameter points to check."""

    problem: cp.Problem
    parameters: list[cp.Parameter]
    outputs: list[cp.Variable | cp.constraints.constraint.Constraint]
    points: list[list[float | np.ndarray]]
    name: str = ""

    def requested(self) -> list[cp.Variable]:
        return [o if isinstance(o, cp.Variable) else o.dual_variables[0] for o in self.outputs]


CASES: dict[str, Callable[[], GPCase]] = {}


def gp_case(builder: Callable[[], GPCase]) -> Callable[[], GPCase]:
    """Register a builder of fresh cases (new parameters, values unset), named after it."""

    @functools.wraps(builder)
    def build() -> GPCase:
        return replace(builder(), name=builder.__name__)

    CASES[builder.__name__] = build
    return build


@gp_case
def exponent_box() -> GPCase:
    """Issue #17's example: x ≥ y**c with c an exponent parameter of either sign; the
    duals of both constraints are outputs too."""
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    c = cp.Parameter(name="c")
    x, y, z = (cp.Variable(pos=True, name=n) for n in "xyz")
    cons = [a * (x * y + x * z + y * z) <= b, x >= y ** c]
    prob = cp.Problem(cp.Minimize(1 / (x * y * z)), cons)
    return GPCase(prob, [a, b, c], [x, y, z, *cons],
                  [[2.0, 1.0, 0.5], [1.5, 2.0, -0.5], [2.5, 1.2, 1.3]])


@gp_case
def exponent_and_coefficient() -> GPCase:
    """One parameter both as a coefficient (through its log) and as an exponent
    (linearly), another as a negative exponent."""
    a, c = cp.Parameter(pos=True, name="a"), cp.Parameter(name="c")
    x, y = cp.Variable(pos=True, name="x"), cp.Variable(pos=True, name="y")
    cons = [a * cp.power(x, a) * y ** c <= 1, x + y <= 2]
    prob = cp.Problem(cp.Minimize(1 / (x * y)), cons)
    return GPCase(prob, [a, c], [x, y, cons[0]], [[0.7, 0.5], [1.6, -0.5], [1.2, -1.3]])


@gp_case
def gmatmul_exponents() -> GPCase:
    """gmatmul(A, x)_i = Π_j x_j**A_ij: a matrix of exponent parameters (any sign), with
    a vector of coefficient parameters on the other side."""
    A = cp.Parameter((2, 2), name="A")
    b = cp.Parameter(2, pos=True, name="b")
    x = cp.Variable(2, pos=True, name="x")
    cons = [cp.gmatmul(A, x) >= b]
    prob = cp.Problem(cp.Minimize(cp.sum(x)), cons)
    return GPCase(prob, [A, b], [x, cons[0]],
                  [[np.array([[1.0, 2.0], [-0.5, 1.0]]), np.array([2.0, 2.5])],
                   [np.array([[2.0, 0.5], [0.7, -1.5]]), np.array([1.5, 7.0])]])


@gp_case
def symmetric_coefficients() -> GPCase:
    """A symmetric matrix of coefficients: cvxpy reduces its log twin to a triangle."""
    S = cp.Parameter((2, 2), symmetric=True, pos=True, name="S")
    x = cp.Variable(2, pos=True, name="x")
    prob = cp.Problem(cp.Minimize(cp.sum(S @ x) + cp.sum(x ** -1)))
    return GPCase(prob, [S], [x], [[np.array([[1.0, 2.0], [2.0, 3.0]])],
                                   [np.array([[0.5, 0.2], [0.2, 4.0]])]])


@gp_case
def posynomial_prod() -> GPCase:
    """A posynomial objective with a vector of coefficients, prod in a constraint, and a
    monomial equality."""
    a, b = cp.Parameter(3, pos=True, name="a"), cp.Parameter(pos=True, name="b")
    x = cp.Variable(3, pos=True, name="x")
    w = cp.Variable(pos=True, name="w")
    cons = [b * cp.prod(x) <= 1, w == 2 * x[0] * x[1] ** -0.5]
    prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(a, x ** -1)) + w), cons)
    return GPCase(prob, [a, b], [x, w, cons[0]],
                  [[np.array([1.0, 2.0, 0.5]), 3.0], [np.array([0.3, 1.5, 2.5]), 0.7]])


@gp_case
def maxima() -> GPCase:
    """cp.maximum and cp.max, minimised at their kinks (x = sqrt(b/a), y = sqrt(c))."""
    a, b, c = (cp.Parameter(pos=True, name=n) for n in "abc")
    x, y = cp.Variable(pos=True, name="x"), cp.Variable(pos=True, name="y")
    prob = cp.Problem(cp.Minimize(cp.maximum(a * x, b / x) + cp.max(cp.hstack([y, c / y]))))
    return GPCase(prob, [a, b, c], [x, y], [[2.0, 1.0, 3.0], [0.5, 4.0, 0.8]])


@gp_case
def one_minus_pos_maximize() -> GPCase:
    """Maximize x**c · y s.t. a·y ≤ 1 − x: x = c/(1+c), y = (1 − x)/a."""
    a, c = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="c")
    x, y = cp.Variable(pos=True, name="x"), cp.Variable(pos=True, name="y")
    cons = [cp.one_minus_pos(x) >= a * y]
    prob = cp.Problem(cp.Maximize(x ** c * y), cons)
    return GPCase(prob, [a, c], [x, y, cons[0]], [[2.0, 1.0], [0.5, 2.5]])


@gp_case
def pf_eigenvalue() -> GPCase:
    """Minimise the Perron-Frobenius eigenvalue of [[a, p], [q, b]] s.t. p·q ≥ c, p = d·q."""
    a, b, c, d = (cp.Parameter(pos=True, name=n) for n in "abcd")
    X = cp.Variable((2, 2), pos=True, name="X")
    cons = [X[0, 0] == a, X[1, 1] == b, X[0, 1] * X[1, 0] >= c, X[0, 1] == d * X[1, 0]]
    prob = cp.Problem(cp.Minimize(cp.pf_eigenvalue(X)), cons)
    return GPCase(prob, [a, b, c, d], [X], [[1.0, 2.0, 0.5, 2.0], [3.0, 0.5, 1.5, 0.7]])


@gp_case
def geo_mean_maximize() -> GPCase:
    """Maximize geo_mean(x, (1, 2, 1)) s.t. aᵀx ≤ 1: x_i = w_i / (a_i Σw)."""
    a = cp.Parameter(3, pos=True, name="a")
    x = cp.Variable(3, pos=True, name="x")
    cons = [a @ x <= 1]
    prob = cp.Problem(cp.Maximize(cp.geo_mean(x, [1, 2, 1])), cons)
    return GPCase(prob, [a], [x, cons[0]], [[np.array([1.0, 2.0, 0.5])],
                                            [np.array([0.3, 1.5, 2.5])]])


# ---------------------------------------------------------------------------- oracles


_CVXPY_SOLVES: dict[tuple, list[np.ndarray]] = {}


def cvxpy_outputs(case: GPCase, values) -> list[np.ndarray]:
    """CVXPY's own gp solve: variable values and constraints' dual values (remembered per
    case and point: both solvers' tests ask for the same ones)."""
    key = (case.name, *(np.asarray(v, dtype=float).tobytes() for v in values))
    if key not in _CVXPY_SOLVES:
        _CVXPY_SOLVES[key] = _solve_with_cvxpy(case, values)
    return [o.copy() for o in _CVXPY_SOLVES[key]]


def _solve_with_cvxpy(case: GPCase, values) -> list[np.ndarray]:
    for p, v in zip(case.parameters, values):
        p.value = v
    cp.Problem(case.problem.objective, case.problem.constraints).solve(gp=True, **CVXPY_ARGS)
    out = [o.value if isinstance(o, cp.Variable) else o.dual_value for o in case.outputs]
    for p in case.parameters:
        p.value = None
    return [np.asarray(o, dtype=float) for o in out]


def compiled(case: GPCase, solver: str = "CLARABEL") -> dpplayers.CompiledProblem:
    assert all(p.value is None for p in case.parameters)
    return dpplayers.compile(case.problem, case.parameters, case.requested(), solver=solver,
                             gp=True)


def as_arrays(values) -> list[np.ndarray]:
    return [np.asarray(v, dtype=float) for v in values]


def directions(case: GPCase, values, rng) -> list[np.ndarray]:
    """Random tangents, symmetric for symmetric parameters (so perturbed values stay
    valid for both dpplayers and CVXPY)."""
    dirs = [rng.standard_normal(np.shape(v)) for v in values]
    return [(d + d.T) / 2 if p.attributes.get("symmetric") else d
            for p, d in zip(case.parameters, dirs)]


def central_difference(solve, values, dirs, eps) -> list[np.ndarray]:
    plus = solve([v + eps * d for v, d in zip(values, dirs)])
    minus = solve([v - eps * d for v, d in zip(values, dirs)])
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def close(got, want, rtol, atol, what):
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol,
                                   err_msg=what)


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_duals_match_cvxpy(name, solver):
    case = CASES[name]()
    prog = compiled(case, solver)
    for point in case.points:
        values = as_arrays(point)
        got = prog.solve(*values, solver_args=TIGHT_ARGS[solver]).values
        close(got, cvxpy_outputs(case, values), 1e-6, 1e-7, f"{name} at {point}")


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", list(CASES))
def test_derivatives_match_finite_differences(name, solver):
    """jvp against central differences of refined dpplayers solves and of CVXPY's own gp
    re-solves; vjp by the dot-product identity; jacobian against jvp."""
    case = CASES[name]()
    prog = compiled(case, solver)
    reference = compiled(CASES[name](), "CLARABEL")  # refined solves for the FD oracle
    rng = np.random.default_rng(sum(map(ord, name)))
    for point in case.points:
        values = as_arrays(point)
        sol = prog.solve(*values, solver_args=TIGHT_ARGS[solver])
        dirs = directions(case, values, rng)
        jvp = sol.jvp(*dirs)
        fd_ours = central_difference(
            lambda v: reference.solve(*v, solver_args=REFINED).values, values, dirs, 1e-6)
        close(jvp, fd_ours, 1e-5, 1e-6, f"{name} at {point}: jvp vs refined FD")
        fd_cvxpy = central_difference(lambda v: cvxpy_outputs(case, v), values, dirs, CVXPY_STEP)
        close(jvp, fd_cvxpy, 1e-4, 1e-5, f"{name} at {point}: jvp vs CVXPY FD")
        ws = [rng.standard_normal(np.shape(o)) for o in sol.values]
        lhs = sum(float(np.sum(g * d)) for g, d in zip(sol.vjp(*ws), dirs))
        rhs = sum(float(np.sum(w * t)) for w, t in zip(ws, jvp))
        assert abs(lhs - rhs) <= 1e-8 * max(1.0, abs(rhs)), (name, point, lhs, rhs)
        for row, t in zip(sol.jacobian(), jvp):
            contracted = sum(np.tensordot(J, d, axes=d.ndim) for J, d in zip(row, dirs))
            np.testing.assert_allclose(contracted, t, rtol=1e-8, atol=1e-10)


def test_issue_example_value():
    """Issue #17: x = 0.561 (CVXPY), not 8.80 (every parameter logged)."""
    case = exponent_box()
    x, _, _, *_ = compiled(case).solve(2.0, 1.0, 0.5, solver_args=TIGHT_ARGS["CLARABEL"]).values
    assert abs(x - 0.5612140) < 1e-5


def test_negative_exponent_is_accepted_and_nonpositive_coefficient_refused():
    """An exponent is any real; a coefficient parameter enters through its log and must
    stay positive (named in the error)."""
    case = exponent_and_coefficient()
    prog = compiled(case)
    sol = prog.solve(1.2, -2.0, solver_args=TIGHT_ARGS["CLARABEL"])
    close(sol.values, cvxpy_outputs(case, as_arrays([1.2, -2.0])), 1e-6, 1e-7, "c = -2")
    with pytest.raises(dpplayers.ParameterError, match="parameter 'a'.*positive"):
        prog.solve(-1.0, 0.5)


def test_batched_mixed_layout_matches_elements():
    """A batch over a parameter used both ways equals its elements solved one by one,
    and so do its vjp and jacobian."""
    case = exponent_and_coefficient()
    prog = compiled(case)
    a, c = np.array([0.7, 1.6, 1.2]), np.array(-0.5)
    sol = prog.solve(a, c, solver_args=REFINED)
    w = [np.ones((3, *np.shape(v))) for v in case.requested()]
    ga, gc = sol.vjp(*w)
    jac = sol.jacobian()
    for k in range(3):
        one = prog.solve(a[k], c, solver_args=REFINED)
        close([v[k] for v in sol.values], one.values, 1e-9, 1e-11, f"element {k}")
        ga_k, gc_k = one.vjp(*[wi[0] for wi in w])
        np.testing.assert_allclose(ga[k], ga_k, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(gc[k], gc_k, rtol=1e-8, atol=1e-10)
        for row_b, row_1 in zip(jac, one.jacobian()):
            for J_b, J_1 in zip(row_b, row_1):
                np.testing.assert_allclose(J_b[k], J_1, rtol=1e-8, atol=1e-10)


def test_layout_logs_only_what_cvxpy_logs():
    """θ holds log(a) and log(b) for coefficients, c itself for an exponent; a parameter
    used both ways keeps its value and gets a log copy after the user's entries."""
    box = compiled(exponent_box()).layout
    assert [(s.name, s.log, s.log_copy) for s in box.specs] == [
        ("a", True, None), ("b", True, None), ("c", False, None)]
    assert box.theta_size == box.size == 3
    both = compiled(exponent_and_coefficient()).layout
    assert [(s.name, s.log, s.log_copy) for s in both.specs] == [
        ("a", False, 2), ("c", False, None)]
    assert both.theta_size == 3
    theta, raw, _ = both.stack([np.array(1.5), np.array(-0.5)])
    np.testing.assert_allclose(theta[:, 0], [1.5, -0.5, np.log(1.5), 1.0])
    np.testing.assert_allclose(raw[:, 0], [1.5, -0.5])


# ---------------------------------------------------------------------------- layers


def test_torch_layer_with_exponent_parameter():
    torch = pytest.importorskip("torch")
    from dpplayers.torch import CvxpyLayer

    case = exponent_box()
    x, y, z = case.outputs[:3]
    layer = CvxpyLayer(case.problem, case.parameters, [x, y, z], gp=True, solver="CLARABEL",
                       solver_args=TIGHT_ARGS["CLARABEL"])
    rng = np.random.default_rng(3)
    for point in case.points[:2]:
        values = as_arrays(point)
        params = [torch.tensor(v, requires_grad=True) for v in values]
        out = layer(*params)
        close([o.detach().numpy() for o in out], cvxpy_outputs(case, values)[:3], 1e-6, 1e-7,
              f"torch at {point}")
        w = rng.standard_normal(3)
        sum(float(wi) * o for wi, o in zip(w, out)).backward()
        grads = [p.grad.numpy() for p in params]
        dirs = directions(case, values, rng)
        fd = central_difference(lambda v: cvxpy_outputs(case, v)[:3], values, dirs,
                                CVXPY_STEP)
        lhs = sum(float(np.sum(g * d)) for g, d in zip(grads, dirs))
        rhs = float(sum(wi * f for wi, f in zip(w, fd)))
        assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(rhs)), (point, lhs, rhs)


def test_jax_layer_with_exponent_parameter():
    jax = pytest.importorskip("jax")
    from dpplayers.jax import CvxpyLayer

    case = exponent_box()
    x, y, z = case.outputs[:3]
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        layer = CvxpyLayer(case.problem, case.parameters, [x, y, z], gp=True,
                           solver="CLARABEL", solver_args=TIGHT_ARGS["CLARABEL"])
        w = rng.standard_normal(3)

        def loss(*params):
            return sum(wi * o for wi, o in zip(w, layer(*params)))

        for point in case.points[1:]:
            values = as_arrays(point)
            out = layer(*values)
            close([np.asarray(o) for o in out], cvxpy_outputs(case, values)[:3], 1e-6, 1e-7,
                  f"jax at {point}")
            grads = jax.grad(loss, argnums=(0, 1, 2))(*values)
            dirs = directions(case, values, rng)
            fd = central_difference(lambda v: cvxpy_outputs(case, v)[:3], values, dirs,
                                CVXPY_STEP)
            lhs = sum(float(np.sum(np.asarray(g) * d)) for g, d in zip(grads, dirs))
            rhs = float(sum(wi * f for wi, f in zip(w, fd)))
            assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(rhs)), (point, lhs, rhs)
