"""Quadratic forms as users write them (issue #17, items 3, 8 and 13).

Each problem is compiled with its parameter values unset and solved at two parameter points,
so a value frozen at compile time cannot pass. Oracles: CVXPY's own Clarabel solve of the
same problem written with constants in place of the parameters, and central finite
differences of those solves along random (symmetric, where the parameter is) directions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers._compile import canonical as compiler
from dpplayers._compile.parameters import ParameterLayout, ParameterSpec
from dpplayers.errors import DPPError

N = 3
CLARABEL_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "refine": 3}
SOLVER_ARGS = {"SCS": {"eps": 1e-9, "max_iters": 100_000}, "CLARABEL": CLARABEL_TIGHT}
ORACLE_ARGS = {"CLARABEL": {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10},
               "SCS": {"eps_abs": 1e-12, "eps_rel": 1e-12, "max_iters": 200_000}}
SOLVERS = ["SCS", "CLARABEL"]
M_CONST = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 1.5]])
A_CONST = np.array([[1.0, 0.2, -0.4], [0.0, 1.0, 0.5], [0.3, 0.0, 1.0]])


def _psd(rng: np.random.Generator, k: int = N) -> np.ndarray:
    F = rng.standard_normal((k, k))
    return F @ F.T / k + 0.5 * np.eye(k)


@dataclass(frozen=True)
class Kind:
    """How to declare one parameter and draw its values and tangent directions."""

    shape: tuple[int, ...]
    attrs: tuple[tuple[str, bool], ...] = ()
    sign: float = 1.0  # -1 for an NSD matrix

    def parameter(self, name: str) -> cp.Parameter:
        return cp.Parameter(self.shape, name=name, **dict(self.attrs))

    def value(self, rng: np.random.Generator) -> np.ndarray:
        if len(self.shape) == 2:
            return self.sign * _psd(rng, self.shape[0])
        return rng.standard_normal(self.shape)

    def direction(self, rng: np.random.Generator) -> np.ndarray:
        d = rng.standard_normal(self.shape)
        return (d + d.T) / 2 if len(self.shape) == 2 else d


VECTOR = Kind((N,))
PSD = Kind((N, N), (("PSD", True),))
NSD = Kind((N, N), (("NSD", True),), sign=-1.0)
SYMMETRIC = Kind((N, N), (("symmetric", True),))


@dataclass(frozen=True)
class Case:
    """A problem builder over its leaves (cp.Parameters, or constants for the oracle)."""

    kinds: tuple[Kind, ...]
    build: Callable[..., cp.Problem]
    oracle: str = "CLARABEL"  # SCS where Clarabel's exp cone is too coarse for differences


def _x() -> cp.Variable:
    return cp.Variable(N, name="x")


CASES: dict[str, Case] = {
    # item 3: a parameter inside a constant-matrix quadratic form
    "quad_form(x-p,M)": Case((VECTOR,), lambda x, p: cp.Problem(
        cp.Minimize(cp.quad_form(x - p, M_CONST)), [x >= -0.2, cp.sum(x) <= 0.5])),
    "matrix_frac(x-p,M)": Case((VECTOR,), lambda x, p: cp.Problem(
        cp.Minimize(cp.matrix_frac(x - p, M_CONST)), [x >= -0.2, cp.sum(x) <= 0.5])),
    "max -quad_form(Ax-p,M) unconstrained": Case((VECTOR, VECTOR), lambda x, p, c: cp.Problem(
        cp.Maximize(c @ x - cp.quad_form(A_CONST @ x - p, M_CONST)))),
    "quad_form(p*x-1,M)": Case((VECTOR,), lambda x, p: cp.Problem(
        cp.Minimize(cp.quad_form(cp.multiply(p, x) - 1, M_CONST) + cp.sum_squares(x)),
        [x <= 0.4])),
    "exp(quad_form(x-p,M)) nested": Case((VECTOR,), lambda x, p: cp.Problem(
        cp.Minimize(cp.exp(0.3 * cp.quad_form(x - p, M_CONST)) + cp.sum_squares(x - 1))),
        oracle="SCS"),
    "quad_form(x-p,M) in a constraint": Case((VECTOR, VECTOR), lambda x, p, c: cp.Problem(
        cp.Minimize(c @ x), [cp.quad_form(x - p, M_CONST) <= 1])),
    # item 8: a parametric quad form and no constraints
    "unconstrained quad_form(x,Q)+q@x": Case((PSD, VECTOR), lambda x, Q, q: cp.Problem(
        cp.Minimize(cp.quad_form(x, Q) + q @ x))),
    "unconstrained 0.5 quad_form(x,Q)-q@x max": Case((PSD, VECTOR), lambda x, Q, q: cp.Problem(
        cp.Maximize(q @ x - 0.5 * cp.quad_form(x, Q)))),
    # item 13: parametric quadratic objectives as cvxpylayers users write them
    "quad_form(x,P1+P2)": Case((PSD, PSD, VECTOR), lambda x, P1, P2, q: cp.Problem(
        cp.Minimize(cp.quad_form(x, P1 + P2) + q @ x), [x >= -0.3])),
    "quad_form(x,2P)": Case((PSD, VECTOR), lambda x, P, q: cp.Problem(
        cp.Minimize(cp.quad_form(x, 2 * P) + q @ x), [x >= -0.3])),
    "quad_form(x,P+I)": Case((PSD, VECTOR), lambda x, P, q: cp.Problem(
        cp.Minimize(cp.quad_form(x, P + np.eye(N)) + q @ x), [x >= -0.3])),
    "max -quad_form(x,Q)": Case((PSD, VECTOR), lambda x, Q, q: cp.Problem(
        cp.Maximize(-cp.quad_form(x, Q) + q @ x), [x <= 0.3])),
    "max quad_form(x,N) NSD": Case((NSD, VECTOR), lambda x, Nm, q: cp.Problem(
        cp.Maximize(cp.quad_form(x, Nm) + q @ x), [x <= 0.3])),
    "two parametric quad forms": Case((PSD, PSD, VECTOR), lambda x, Q1, Q2, q: cp.Problem(
        cp.Minimize(cp.quad_form(x, Q1) + 0.5 * cp.quad_form(A_CONST @ x - 1, Q2) + q @ x),
        [cp.sum(x) <= 1])),
    "same Q twice": Case((PSD, VECTOR), lambda x, Q, q: cp.Problem(
        cp.Minimize(cp.quad_form(x, Q) + cp.quad_form(x + 1, Q) / 2 + q @ x), [x >= -0.3])),
    "quad_form(x-p,Q) both parametric": Case((PSD, VECTOR), lambda x, Q, p: cp.Problem(
        cp.Minimize(cp.quad_form(x - p, Q) + cp.sum(x)), [x >= -0.3])),
    "psd_wrap(S)": Case((SYMMETRIC, VECTOR), lambda x, S, q: cp.Problem(
        cp.Minimize(cp.quad_form(x, cp.psd_wrap(S)) + q @ x), [x >= -0.3])),
}


def _oracle(case: Case, values: list[np.ndarray]) -> np.ndarray:
    """CVXPY's own solution of the problem written with constants."""
    x = _x()
    problem = case.build(x, *values)
    problem.solve(solver=case.oracle, **ORACLE_ARGS[case.oracle])
    assert problem.status == cp.OPTIMAL
    return x.value


def _oracle_jvp(case: Case, values: list[np.ndarray], directions: list[np.ndarray],
                h: float = 1e-5) -> np.ndarray:
    plus = _oracle(case, [v + h * d for v, d in zip(values, directions)])
    minus = _oracle(case, [v - h * d for v, d in zip(values, directions)])
    return (plus - minus) / (2 * h)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", CASES)
def test_values_and_gradients_follow_every_parameter(name: str, solver: str) -> None:
    case = CASES[name]
    x = _x()
    params = [kind.parameter(f"theta{i}") for i, kind in enumerate(case.kinds)]
    problem = case.build(x, *params)
    prog = dpplayers.compile(problem, parameters=params, variables=[x], solver=solver)
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        values = [kind.value(rng) for kind in case.kinds]
        sol = prog.solve(*values, solver_args=SOLVER_ARGS[solver])
        np.testing.assert_allclose(sol.values[0], _oracle(case, values), rtol=1e-6, atol=1e-6)

        directions = [kind.direction(rng) for kind in case.kinds]
        jvp = sol.jvp(*directions)[0]
        np.testing.assert_allclose(jvp, _oracle_jvp(case, values, directions),
                                   rtol=1e-4, atol=1e-5)
        w = rng.standard_normal(N)
        grads = sol.vjp(w)
        assert np.dot(w, jvp) == pytest.approx(
            sum(np.sum(g * d) for g, d in zip(grads, directions)), rel=1e-7, abs=1e-9)
        for kind, g in zip(case.kinds, grads):
            if len(kind.shape) == 2:  # a symmetric parameter gets a symmetric gradient
                np.testing.assert_allclose(g, g.T, atol=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
def test_each_parameter_of_a_matrix_sum_gets_its_own_gradient(solver: str) -> None:
    """quad_form(x, P1 + 2 P2): the gradient w.r.t. P2 is twice that w.r.t. P1."""
    x = _x()
    P1, P2 = PSD.parameter("P1"), PSD.parameter("P2")
    q = VECTOR.parameter("q")
    problem = cp.Problem(cp.Minimize(cp.quad_form(x, P1 + 2 * P2) + q @ x), [x >= -0.3])
    prog = dpplayers.compile(problem, parameters=[P1, P2, q], solver=solver)
    rng = np.random.default_rng(3)
    sol = prog.solve(_psd(rng), _psd(rng), rng.standard_normal(N),
                     solver_args=SOLVER_ARGS[solver])
    g1, g2, _ = sol.vjp(rng.standard_normal(N))
    np.testing.assert_allclose(g2, 2 * g1, rtol=1e-9, atol=1e-12)
    assert np.linalg.norm(g1) > 1e-3


def test_parameter_set_before_compile_is_not_frozen() -> None:
    """With p.value set at compile time, later solves still follow the new p."""
    x = cp.Variable(2, name="x")
    p = cp.Parameter(2, name="p", value=np.zeros(2))
    M = np.array([[2.0, 0.5], [0.5, 1.0]])
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.quad_form(x - p, M))), [p], [x])
    for point in (np.array([1.0, 2.0]), np.array([-3.0, 0.5])):
        sol = prog.solve(point, solver_args={"eps": 1e-10})
        np.testing.assert_allclose(sol.values[0], point, atol=1e-6)
        np.testing.assert_allclose(sol.jacobian()[0][0], np.eye(2), atol=1e-6)


def test_a_parameter_cvxpy_would_freeze_is_refused_by_name(monkeypatch) -> None:
    """Without the argument rewrite, cvxpy would evaluate p once (EvalParams): refused."""
    monkeypatch.setattr(compiler, "lift_parametric_quad_forms", lambda problem: (problem, ()))
    x = cp.Variable(2, name="x")
    p = cp.Parameter(2, name="p")
    problem = cp.Problem(cp.Minimize(cp.quad_form(x - p, np.eye(2)) + cp.sum(x)))
    with pytest.raises(DPPError, match=r"(?s)`p`.*QuadForm\(x \+ -p.*sum_squares\(L @"):
        dpplayers.compile(problem, [p], [x])


def test_a_parameter_not_in_the_problem_is_refused_by_name() -> None:
    x = cp.Variable(2, name="x")
    p, stray = cp.Parameter(2, name="p"), cp.Parameter(2, name="stray")
    problem = cp.Problem(cp.Minimize(cp.quad_form(x - p, np.eye(2))))
    with pytest.raises(DPPError, match="not parameters of the problem: stray"):
        dpplayers.compile(problem, [p, stray], [x])


@pytest.mark.parametrize("build, phrase", [
    (lambda x, P, S: (cp.Minimize(cp.quad_form(x, P + S)), []), "PSD as cvxpy sees it"),
    (lambda x, P, S: (cp.Maximize(cp.quad_form(x, P)), []), "constant positive weight"),
    (lambda x, P, S: (cp.Minimize(cp.sum(x)), [cp.quad_form(x, P) <= 1]), "in a constraint"),
])
def test_unsupported_parametric_matrices_are_explained(build: Callable, phrase: str) -> None:
    x = _x()
    P, S = PSD.parameter("P"), SYMMETRIC.parameter("S")
    objective, constraints = build(x, P, S)
    with pytest.raises(DPPError, match=phrase):
        dpplayers.compile(cp.Problem(objective, constraints + [x >= -1]))


def test_a_parameter_missing_from_cvxpy_data_is_refused_unless_lifted() -> None:
    """The compiler's last guard: a parameter cvxpy's data lacks (here: no reductions and an
    empty ``param_id_to_col``) is named, unless lifted quad forms alone carry it."""
    p = cp.Parameter(2, name="p")
    layout = ParameterLayout((ParameterSpec.of(p, 0, False),))
    chain = SimpleNamespace(reductions=[])
    pp = SimpleNamespace(A=np.zeros((4, 1)), param_id_to_col={})
    entries = [compiler._entries(chain, pp, p)]
    with pytest.raises(DPPError, match="parameter 'p' is not in cvxpy's compiled program"):
        compiler._lowering_matrix(pp, [p], entries, layout, set())
    lowering = compiler._lowering_matrix(pp, [p], entries, layout, {p.id})
    assert lowering.shape == (1, 3) and lowering.nnz == 1  # only the constant
