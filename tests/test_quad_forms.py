"""Lifting parametric quad forms out of the objective: which terms, which weights, same optimum."""

from __future__ import annotations

from collections.abc import Callable

import cvxpy as cp
import numpy as np
import pytest

from dpplayers._compile.quad_forms import (
    ParametricQuadForm,
    explain_quad_form,
    lift_parametric_quad_forms,
    quad_form_matrix,
)

N = 3


def _psd(rng: np.random.Generator, k: int) -> np.ndarray:
    F = rng.standard_normal((k, k))
    return F @ F.T + 0.1 * np.eye(k)


def _leaves() -> tuple[cp.Variable, cp.Parameter, cp.Parameter]:
    return cp.Variable(N, name="z"), cp.Parameter((N, N), PSD=True, name="Q"), cp.Parameter(
        N, name="q")


# ---------------------------------------------------------------- which terms, which weights


@pytest.mark.parametrize(
    ("build", "weights"),
    [
        (lambda z, Q, q: cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [0.5]),
        (lambda z, Q, q: cp.Minimize(cp.quad_form(z, Q) * 2 + q @ z), [2.0]),
        (lambda z, Q, q: cp.Minimize(cp.quad_form(z, Q) / 4 + q @ z), [0.25]),
        (lambda z, Q, q: cp.Minimize(q @ z + 3 * (cp.quad_form(z, Q) / 4 + cp.sum(z))), [0.75]),
        (lambda z, Q, q: cp.Maximize(-2 * cp.quad_form(z, Q) + q @ z), [2.0]),
        (lambda z, Q, q: cp.Maximize(q @ z - cp.quad_form(z, Q)), [1.0]),
        (lambda z, Q, q: cp.Minimize(-(q @ z - cp.quad_form(z, Q))), [1.0]),
        (lambda z, Q, q: cp.Minimize(cp.quad_form(z, Q) + cp.quad_form(z - 1, Q) / 2), [1, 0.5]),
        (lambda z, Q, q: cp.Minimize(cp.quad_form(z, Q)), [1.0]),
    ],
    ids=["half", "times2", "div4", "nested", "max-neg", "max-minus", "double-neg", "two", "only"],
)
def test_lift_finds_terms_with_weights(build: Callable, weights: list[float]) -> None:
    z, Q, q = _leaves()
    problem = cp.Problem(build(z, Q, q), [z >= -1])
    lifted, forms = lift_parametric_quad_forms(problem)
    assert [f.weight for f in forms] == pytest.approx(weights)
    assert all(f.matrix is Q for f in forms)
    assert all(f.aux.shape == (N,) and f.expression.shape == (N,) for f in forms)
    assert isinstance(lifted.objective, cp.Minimize)
    assert lifted.constraints[:1] == problem.constraints
    copies = sum(f.aux is not f.expression for f in forms)  # a mentioned vector variable is reused
    assert len(lifted.constraints) == 1 + copies
    assert not any(quad_form_matrix(e) for e in _atoms(lifted.objective.args[0]))
    assert lifted.is_dpp()
    assert len(problem.constraints) == 1  # the input is untouched


def _atoms(expr: cp.Expression) -> list[cp.Expression]:
    return [expr] + [a for arg in expr.args for a in _atoms(arg)]


def test_lift_column_argument_is_flattened() -> None:
    x = cp.Variable((N, 1), name="x")
    Q = cp.Parameter((N, N), PSD=True, name="Q")
    _, (form,) = lift_parametric_quad_forms(cp.Problem(cp.Minimize(cp.quad_form(x, Q))))
    assert form.expression.shape == (N,) and form.aux.shape == (N,)


def test_lift_accepts_psd_wrap_of_symmetric_parameter() -> None:
    z = cp.Variable(N)
    S = cp.Parameter((N, N), symmetric=True, name="S")
    _, (form,) = lift_parametric_quad_forms(
        cp.Problem(cp.Minimize(cp.quad_form(z, S, assume_PSD=True))))
    assert form.matrix is S


def test_lift_without_terms_returns_problem_unchanged() -> None:
    z, _, q = _leaves()
    P = np.eye(N)
    problem = cp.Problem(cp.Minimize(cp.quad_form(z, P) + q @ z), [z >= 0])
    lifted, forms = lift_parametric_quad_forms(problem)
    assert lifted is problem and forms == ()


@pytest.mark.parametrize(
    "build",
    [
        lambda z, Q, S, g: cp.Minimize(-cp.quad_form(z, Q)),  # negative weight
        lambda z, Q, S, g: cp.Maximize(cp.quad_form(z, Q)),  # negative weight
        lambda z, Q, S, g: cp.Minimize(g * cp.quad_form(z, Q)),  # parameter weight
        lambda z, Q, S, g: cp.Minimize(cp.exp(cp.quad_form(z, Q))),  # nested in an atom
        lambda z, Q, S, g: cp.Minimize(cp.quad_form(z, S)),  # not declared PSD
        lambda z, Q, S, g: cp.Minimize(cp.quad_form(z, Q + S)),  # not a bare parameter
        lambda z, Q, S, g: cp.Minimize(0 * cp.quad_form(z, Q)),  # zero weight
    ],
    ids=["neg", "max", "param-weight", "nested", "not-psd", "not-bare", "zero"],
)
def test_lift_leaves_unsupported_terms(build: Callable) -> None:
    z, Q, _ = _leaves()
    S = cp.Parameter((N, N), symmetric=True, name="S")
    g = cp.Parameter(name="g")
    problem = cp.Problem(build(z, Q, S, g), [z >= -1])
    lifted, forms = lift_parametric_quad_forms(problem)
    assert lifted is problem and forms == ()


def test_lift_leaves_constraints_alone() -> None:
    z, Q, q = _leaves()
    problem = cp.Problem(cp.Minimize(q @ z), [cp.quad_form(z, Q) <= 1])
    assert lift_parametric_quad_forms(problem) == (problem, ())


def test_explain_quad_form_names_the_reason() -> None:
    z, Q, _ = _leaves()
    S = cp.Parameter((N, N), symmetric=True, name="S")
    assert "in a constraint" in explain_quad_form(cp.quad_form(z, Q), in_objective=False)
    assert "sum_squares(L @ (z))" in explain_quad_form(cp.quad_form(z, Q), in_objective=False)
    assert "PSD=True" in explain_quad_form(cp.quad_form(z, S), in_objective=True)
    assert "bare cp.Parameter" in explain_quad_form(cp.quad_form(z, Q + S), in_objective=True)
    assert "constant positive weight" in explain_quad_form(cp.quad_form(z, Q), True)


def test_parametric_quad_form_checks_its_fields() -> None:
    z, Q, _ = _leaves()
    aux = cp.Variable(N)
    with pytest.raises(ValueError, match="weight must be positive"):
        ParametricQuadForm(-1.0, aux, Q, z)
    with pytest.raises(ValueError, match="shapes disagree"):
        ParametricQuadForm(1.0, cp.Variable(N + 1), Q, z)
    with pytest.raises(ValueError, match="expression has shape"):
        ParametricQuadForm(1.0, aux, Q, cp.Variable((N, 1)))


# ---------------------------------------------------------------- same optimum as the original


def _optnet(z: cp.Variable, Q, q) -> cp.Problem:
    G = np.array([[1.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
    return cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [G @ z <= 1, z >= -2])


def _two_terms(z: cp.Variable, Q, q) -> cp.Problem:
    objective = cp.Minimize(q @ z + 2 * (cp.quad_form(z - 1, Q) / 3) + cp.quad_form(z[::-1], Q))
    return cp.Problem(objective, [cp.sum(z) == 1])


def _maximize(z: cp.Variable, Q, q) -> cp.Problem:
    return cp.Problem(cp.Maximize(q @ z - cp.quad_form(z, Q) - cp.sum_squares(z)), [z <= 3])


def _column(z: cp.Variable, Q, q) -> cp.Problem:
    x = cp.Variable((N, 1), name="x")
    return cp.Problem(cp.Minimize(cp.quad_form(x + 1, Q) + q @ z),
                      [z == x[:, 0], cp.norm(z, 1) <= 2])


@pytest.mark.parametrize("make", [_optnet, _two_terms, _maximize, _column])
@pytest.mark.parametrize("seed", [0, 1])
def test_lifted_problem_has_the_original_optimum(make: Callable, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Q_value, q_value = _psd(rng, N), rng.standard_normal(N)
    z, Q, q = _leaves()
    q.value = q_value
    problem = make(z, Q, q)
    lifted, forms = lift_parametric_quad_forms(problem)
    assert forms
    Q.value = Q_value
    added = sum(f.weight * cp.quad_form(f.aux, f.matrix.value) for f in forms)
    closed = cp.Problem(lifted.objective + cp.Minimize(added), lifted.constraints)
    closed.solve(solver=cp.CLARABEL)

    z_ref = cp.Variable(N, name="z")
    reference = make(z_ref, Q_value, q_value)
    reference.solve(solver=cp.CLARABEL)

    sign = -1.0 if isinstance(problem.objective, cp.Maximize) else 1.0
    assert closed.status == reference.status == cp.OPTIMAL
    np.testing.assert_allclose(closed.value, sign * reference.value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(z.value, z_ref.value, rtol=1e-5, atol=1e-6)
    for form in forms:
        np.testing.assert_allclose(form.aux.value, form.expression.value, atol=1e-7)
