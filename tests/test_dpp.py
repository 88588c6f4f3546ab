"""check_dpp: cvxpy's verdict, the offending sub-expression, its rule, and the report."""

from __future__ import annotations

from collections.abc import Callable

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dpplayers
from dpplayers._compile.dpp import DPPReport, Rule, Violation, check_dpp
from dpplayers._compile.quad_forms import lift_parametric_quad_forms
from dpplayers.errors import DPPError


def _dcp_leaves() -> dict[str, cp.Leaf]:
    """Fresh, named leaves so that cvxpy prints the same strings in every test."""
    return {
        "x": cp.Variable(3, name="x"),
        "y": cp.Variable(name="y"),
        "z": cp.Variable(3, name="z"),
        "gamma": cp.Parameter(name="gamma"),
        "lam": cp.Parameter(name="lam"),
        "theta": cp.Parameter(3, name="theta"),
        "p": cp.Parameter(3, name="p"),
        "Q": cp.Parameter((3, 3), PSD=True, name="Q"),
        "S": cp.Parameter((3, 3), symmetric=True, name="S"),
        "w": cp.Variable(pos=True, name="w"),
    }


# Each case: the problem, then the expected (expression, rule, location prefix) triples.
NON_DPP: dict[str, tuple[Callable[..., cp.Problem], list[tuple[str, Rule, str]]]] = {
    "param-times-param": (
        lambda x, y, gamma, lam, **_: cp.Problem(cp.Minimize(gamma * lam * y), [y >= 0]),
        [("gamma * lam", Rule.PARAMETER_PRODUCT, "objective")]),
    "exp-of-param": (
        lambda x, theta, **_: cp.Problem(cp.Minimize(cp.exp(theta) @ x), [x >= 0]),
        [("exp(theta)", Rule.PARAMETER_IN_NONAFFINE, "objective")]),
    "power-of-param": (
        lambda x, p, **_: cp.Problem(cp.Minimize(cp.power(p, 2) @ x), [x >= 0]),
        [(str(cp.power(cp.Parameter(3, name="p"), 2)), Rule.PARAMETER_IN_NONAFFINE,
          "objective")]),
    "param-at-param": (
        lambda x, p, **_: cp.Problem(cp.Minimize((p @ p) * cp.sum(x)), [x >= 0]),
        [("p @ p", Rule.PARAMETER_PRODUCT, "objective")]),
    "norm-of-param": (
        lambda y, p, **_: cp.Problem(cp.Minimize(cp.norm(p) * y), [y >= 0]),
        [(str(cp.norm(cp.Parameter(3, name="p"))), Rule.PARAMETER_IN_NONAFFINE, "objective")]),
    "product-in-constraint": (
        lambda x, gamma, lam, **_: cp.Problem(cp.Minimize(cp.sum(x)), [gamma * lam * x <= 1]),
        [("gamma * lam", Rule.PARAMETER_PRODUCT, "constraint 0: ")]),
    "param-times-affine-param": (
        lambda x, gamma, lam, **_: cp.Problem(cp.Minimize(gamma * cp.sum(lam * x)), [x >= 0]),
        [("gamma * Sum(Promote(lam, (3,)) * x, None, False)", Rule.PARAMETER_PRODUCT,
          "objective")]),
    "divide-by-param": (
        lambda y, gamma, **_: cp.Problem(cp.Minimize(y / gamma), [y >= 1]),
        [("y / gamma", Rule.PARAMETER_IN_NONAFFINE, "objective")]),
    "param-in-quad-over-lin": (
        lambda x, gamma, **_: cp.Problem(cp.Minimize(cp.quad_over_lin(x, gamma))),
        [("quad_over_lin(x, gamma, None, False)", Rule.PARAMETER_IN_NONAFFINE, "objective")]),
    "exp-param-bound": (
        lambda x, theta, **_: cp.Problem(cp.Minimize(cp.sum(x)), [x <= cp.exp(theta)]),
        [("exp(theta)", Rule.PARAMETER_IN_NONAFFINE, "constraint 0: x <= exp(theta)")]),
    "minimize-concave": (
        lambda y, **_: cp.Problem(cp.Minimize(cp.log(y)), [y <= 1]),
        [("log(y)", Rule.NOT_DCP, "objective")]),
    "concave-below": (
        lambda y, **_: cp.Problem(cp.Minimize(y), [cp.sqrt(y) <= 1]),
        [(str(cp.sqrt(cp.Variable(name="y"))), Rule.NOT_DCP, "constraint 0: ")]),
    "convex-above": (
        lambda y, **_: cp.Problem(cp.Minimize(y), [cp.square(y) >= 1]),
        [(str(cp.square(cp.Variable(name="y"))), Rule.NOT_DCP, "constraint 0: 1.0 <= ")]),
    "variable-product": (
        lambda x, y, **_: cp.Problem(cp.Minimize(x[0] * y)),
        [("x[0] * y", Rule.NOT_DCP, "objective")]),
    "unknown-sign": (
        lambda y, gamma, **_: cp.Problem(cp.Minimize(gamma * cp.square(y))),
        [(str(cp.Parameter(name="gamma") * cp.square(cp.Variable(name="y"))), Rule.NOT_DCP,
          "objective")]),
    "dqcp-ceil": (
        lambda y, **_: cp.Problem(cp.Minimize(cp.ceil(y)), [y >= 1]),
        [("ceil(y)", Rule.DQCP_ONLY, "objective")]),
    "dqcp-ratio": (
        lambda y, w, **_: cp.Problem(cp.Minimize(y / w), [y >= 1, w <= 2]),
        [("y / w", Rule.DQCP_ONLY, "objective")]),
    "quad-form-in-constraint": (
        lambda x, z, Q, **_: cp.Problem(cp.Minimize(cp.sum(x)), [cp.quad_form(x - z, Q) <= 1]),
        [("QuadForm(x + -z, Q)", Rule.QUAD_FORM_NOT_IN_OBJECTIVE, "constraint 0: ")]),
    "quad-form-not-psd": (
        lambda x, S, **_: cp.Problem(cp.Minimize(cp.quad_form(x, S))),
        [("QuadForm(x, S)", Rule.QUAD_FORM_NOT_IN_OBJECTIVE, "objective")]),
    "quad-form-negative": (
        lambda x, Q, **_: cp.Problem(cp.Maximize(cp.quad_form(x, Q)), [x <= 1]),
        [("QuadForm(x, Q)", Rule.QUAD_FORM_NOT_IN_OBJECTIVE, "objective")]),
    "two-in-objective": (
        lambda x, y, theta, **_: cp.Problem(
            cp.Minimize(cp.sum_squares(x) + cp.log(y) + cp.exp(theta) @ x), [x >= 0]),
        [("log(y)", Rule.NOT_DCP, "objective"),
         ("exp(theta)", Rule.PARAMETER_IN_NONAFFINE, "objective")]),
    "objective-and-constraint": (
        lambda x, y, gamma, lam, theta, **_: cp.Problem(
            cp.Minimize(cp.exp(theta) @ x), [x >= 0, y == gamma * lam]),
        [("exp(theta)", Rule.PARAMETER_IN_NONAFFINE, "objective"),
         ("gamma * lam", Rule.PARAMETER_PRODUCT, "constraint 1: y == gamma * lam")]),
    "lifted-argument": (
        lambda x, Q, gamma, lam, **_: cp.Problem(
            cp.Minimize(cp.quad_form(gamma * lam * x, Q)), [x >= 0]),
        [("gamma * lam", Rule.PARAMETER_PRODUCT, "objective")]),
}


@pytest.mark.parametrize("name", NON_DPP)
def test_non_dpp_problem_names_expression_and_rule(name: str) -> None:
    build, expected = NON_DPP[name]
    problem = build(**_dcp_leaves())
    report = check_dpp(problem)
    got = [(v.expression, v.rule) for v in report.violations]
    assert got == [(expression, rule) for expression, rule, _ in expected]
    for violation, (_, _, location) in zip(report.violations, expected):
        assert violation.location.startswith(location)
        assert violation.hint
    assert not report.ok and not report.gp
    # the verdict is cvxpy's, on the lifted problem
    assert not lift_parametric_quad_forms(problem)[0].is_dpp()


DPP_OK: dict[str, Callable[..., cp.Problem]] = {
    "lp": lambda x, p, **_: cp.Problem(cp.Minimize(p @ x), [x >= 0, cp.sum(x) == 1]),
    "optnet-qp": lambda z, Q, p, **_: cp.Problem(
        cp.Minimize(0.5 * cp.quad_form(z, Q) + p @ z), [z >= 0]),
    "optnet-qp-max": lambda z, Q, p, **_: cp.Problem(
        cp.Maximize(-0.5 * cp.quad_form(z, Q) - p @ z), [z >= 0]),
    "lifted-param-argument": lambda x, Q, gamma, **_: cp.Problem(
        cp.Minimize(cp.quad_form(gamma * x, Q))),
    "socp": lambda x, p, gamma, **_: cp.Problem(
        cp.Minimize(cp.norm(x - p)), [gamma * cp.sum(x) <= 1]),
    "sqrt-above": lambda y, **_: cp.Problem(cp.Minimize(y), [cp.sqrt(y) >= 1]),
    "exp-cone": lambda x, theta, **_: cp.Problem(cp.Minimize(cp.sum(cp.exp(x)) - theta @ x)),
}


@pytest.mark.parametrize("name", DPP_OK)
def test_dpp_problem_is_ok(name: str) -> None:
    report = check_dpp(DPP_OK[name](**_dcp_leaves()))
    assert report.ok and report.violations == ()
    assert str(report) == "The problem is DPP."


def _dgp_leaves() -> dict[str, cp.Leaf]:
    return {
        "r": cp.Variable(pos=True, name="r"),
        "s": cp.Variable(pos=True, name="s"),
        "u": cp.Variable(name="u"),
        "a": cp.Parameter(pos=True, name="a", value=1.0),
        "b": cp.Parameter(pos=True, name="b", value=2.0),
        "c": cp.Parameter(name="c"),
    }


DGP_OK: dict[str, Callable[..., cp.Problem]] = {
    "monomials": lambda r, s, a, b, **_: cp.Problem(
        cp.Minimize(r**0.5 * s), [a * r <= 1, b * s >= 2]),
    "posynomial-bound": lambda r, a, b, **_: cp.Problem(cp.Minimize(r), [r >= a + b]),
    "param-exponent": lambda r, a, **_: cp.Problem(cp.Minimize(r**a), [r >= 2]),
    "maximize-volume": lambda r, s, a, **_: cp.Problem(cp.Maximize(r * s), [r + s <= a]),
}


@pytest.mark.parametrize("name", DGP_OK)
def test_dgp_problem_is_ok_with_gp(name: str) -> None:
    report = check_dpp(DGP_OK[name](**_dgp_leaves()), gp=True)
    assert report.ok and report.gp
    assert str(report) == "The problem is DGP-DPP."


NON_DGP: dict[str, tuple[Callable[..., cp.Problem], list[tuple[str, Rule]]]] = {
    "posynomial-equality": (
        lambda r, s, a, b, **_: cp.Problem(cp.Minimize(r * s), [r * (a + b) == 1, s >= a]),
        [("a + b", Rule.GP_PARAMETER)]),
    "posynomial-upper-bound": (
        lambda r, s, a, **_: cp.Problem(cp.Minimize(1 / r + s), [r <= 1 + a, s >= 1]),
        [("1.0 + a", Rule.GP_PARAMETER)]),
    "parameter-not-positive": (
        lambda r, c, **_: cp.Problem(cp.Minimize(c * r), [r >= 1]),
        [("c", Rule.GP_PARAMETER)]),
    "variable-not-positive": (
        lambda r, u, **_: cp.Problem(cp.Minimize(u * r), [r >= 1]),
        [("u", Rule.NOT_DGP)]),
    "maximize-posynomial": (
        lambda r, s, **_: cp.Problem(cp.Maximize(r + s), [r * s <= 1]),
        [("r + s", Rule.NOT_DGP)]),
}


@pytest.mark.parametrize("name", NON_DGP)
def test_non_dgp_problem_names_expression_and_rule(name: str) -> None:
    build, expected = NON_DGP[name]
    problem = build(**_dgp_leaves())
    report = check_dpp(problem, gp=True)
    assert [(v.expression, v.rule) for v in report.violations] == expected
    assert not report.ok and report.gp
    assert not problem.is_dgp(dpp=True)


def test_gp_flag_selects_the_ruleset() -> None:
    leaves = _dgp_leaves()
    dgp = DGP_OK["monomials"](**leaves)
    assert not check_dpp(dgp).ok  # r**0.5 * s is not DCP
    lp = DPP_OK["lp"](**_dcp_leaves())
    got = {(v.expression, v.rule, v.location[:12]): v.hint
           for v in check_dpp(lp, gp=True).violations}
    assert "declare `p` with pos=True" in got["p", Rule.GP_PARAMETER, "objective"]
    assert "declare `x` with pos=True" in got["x", Rule.NOT_DGP, "objective"]
    assert "positive constants" in got["0.0", Rule.NOT_DGP, "constraint 0"]


def test_non_dgp_constraint_type_is_reported_whole() -> None:
    r = cp.Variable(pos=True, name="r")
    X = cp.Variable((2, 2), name="X")
    report = check_dpp(cp.Problem(cp.Minimize(r), [r >= 1, X >> 0]), gp=True)
    assert report.violations[-1].location.startswith("constraint 1: X + ")
    assert report.violations[-1].expression.endswith(">> 0")
    assert report.violations[-1].rule is Rule.NOT_DGP


# ---------------------------------------------------------------- hints


def test_hints_name_the_expression_and_the_rewrite() -> None:
    by_case = {
        name: check_dpp(build(**_dcp_leaves())).violations[0].hint
        for name, (build, _) in NON_DPP.items()
    }
    assert "introduce a new parameter for `gamma * lam` and pass its value" in by_case[
        "param-times-param"]
    assert "precompute `exp(theta)`" in by_case["exp-of-param"]
    assert "1/(gamma)" in by_case["divide-by-param"]
    assert "nonneg=True" in by_case["unknown-sign"]
    assert "cp.sum_squares(L @ (x + -z))" in by_case["quad-form-in-constraint"]
    assert "PSD=True" in by_case["quad-form-not-psd"]
    assert "concave where convex is needed (in a minimised objective)" in by_case[
        "minimize-concave"]
    assert "qcp=True" in by_case["minimize-concave"]  # log is monotone: cvxpy's DQCP takes it
    assert "right-hand side" in by_case["convex-above"]
    assert "not support" not in by_case["convex-above"]
    assert "bisection" in by_case["dqcp-ceil"]


def test_long_constraint_location_is_truncated() -> None:
    x = cp.Variable(3, name="x")
    gamma, lam = cp.Parameter(name="gamma"), cp.Parameter(name="lam")
    long = cp.sum(x + 1) + cp.sum(x + 2) + cp.sum(x + 3) + cp.sum(x + 4) + cp.sum(x + 5)
    report = check_dpp(cp.Problem(cp.Minimize(0), [x >= 0, long <= gamma * lam]))
    (violation,) = report.violations
    assert violation.location.startswith("constraint 1: Sum(x + Promote(1.0, (3,))")
    assert violation.location.endswith("...")
    assert len(violation.location) <= len("constraint 1: ") + 60


# ---------------------------------------------------------------- parameter and variable lists


def test_parameters_none_means_all() -> None:
    leaves = _dcp_leaves()
    problem = DPP_OK["socp"](**leaves)
    assert check_dpp(problem).missing_parameters == ()
    report = check_dpp(problem, [leaves["p"], leaves["gamma"]])
    assert report.ok and report.missing_parameters == report.unknown_parameters == ()


def test_missing_and_unknown_parameters() -> None:
    leaves = _dcp_leaves()
    problem = DPP_OK["socp"](**leaves)
    report = check_dpp(problem, [leaves["p"], leaves["lam"]])
    assert not report.ok and report.violations == ()
    assert report.missing_parameters == ("gamma",)
    assert report.unknown_parameters == ("lam",)
    text = str(report)
    assert text.startswith("The problem is DPP, but:")
    assert "missing from `parameters` (pass them all): gamma" in text
    assert "not parameters of the problem: lam" in text


def test_requested_variables_and_duals() -> None:
    leaves = _dcp_leaves()
    x = leaves["x"]
    problem = DPP_OK["lp"](**leaves)
    nonneg, total = problem.constraints
    assert check_dpp(problem, variables=[x, nonneg.dual_variables[0]]).ok
    stranger = cp.Variable(2, name="stranger")
    foreign = cp.Variable(3) >= 0
    report = check_dpp(problem, variables=[x, stranger, foreign.dual_variables[0],
                                           total.dual_variables[0]])
    assert not report.ok
    # an unnamed one by its position in `variables` and its shape (not cvxpy's var1234)
    assert report.unknown_variables == ("stranger", "#2 (shape (3,))")
    assert "not variables or constraint duals of it: stranger" in str(report)


def test_lifted_aux_variables_are_not_requestable_and_not_needed() -> None:
    leaves = _dcp_leaves()
    problem = DPP_OK["optnet-qp"](**leaves)
    _, (form,) = lift_parametric_quad_forms(problem)
    assert form.aux is leaves["z"]  # a bare variable that the constraints mention is reused
    assert check_dpp(problem, variables=[leaves["z"]]).ok
    stray = cp.Variable(3, name="stray_aux")
    assert check_dpp(problem, variables=[stray]).unknown_variables == ("stray_aux",)


# ---------------------------------------------------------------- the report and its error


def test_report_text_lists_numbered_violations() -> None:
    build, _ = NON_DPP["objective-and-constraint"]
    report = check_dpp(build(**_dcp_leaves()))
    text = str(report)
    assert text.splitlines()[0] == "The problem is not DPP: 2 violations."
    assert "  1. exp(theta)\n     rule:  parameter inside a non-affine expression" in text
    assert "  2. gamma * lam\n     rule:  product of two parameter-dependent expressions" in text
    assert "     where: constraint 1: y == gamma * lam" in text
    assert "     fix:   introduce a new parameter for `gamma * lam`" in text


def test_dpp_error_carries_the_report() -> None:
    build, _ = NON_DPP["param-times-param"]
    report = check_dpp(build(**_dcp_leaves()))
    with pytest.raises(DPPError, match=r"1\. gamma \* lam") as info:
        raise DPPError(report)
    assert info.value.report is report
    assert isinstance(info.value, ValueError)
    assert str(info.value) == str(report)


def test_report_and_violation_are_frozen() -> None:
    report = check_dpp(NON_DPP["exp-of-param"][0](**_dcp_leaves()))
    assert isinstance(report, DPPReport) and isinstance(report.violations[0], Violation)
    with pytest.raises(AttributeError):
        report.ok = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        report.violations[0].rule = Rule.NOT_DCP  # type: ignore[misc]


def test_rule_values_are_descriptions() -> None:
    assert all(isinstance(rule.value, str) and len(rule.value) > 10 for rule in Rule)


def test_check_dpp_rejects_non_problems() -> None:
    with pytest.raises(TypeError, match="expects a cvxpy Problem, got Minimize"):
        check_dpp(cp.Minimize(cp.Variable()))  # type: ignore[arg-type]


def test_check_does_not_modify_the_problem() -> None:
    leaves = _dcp_leaves()
    problem = DPP_OK["optnet-qp"](**leaves)
    before = (str(problem), len(problem.constraints), problem.variables())
    check_dpp(problem)
    assert (str(problem), len(problem.constraints), problem.variables()) == before
    leaves["Q"].value, leaves["p"].value = np.eye(3), np.ones(3)
    problem.solve(solver=cp.CLARABEL, ignore_dpp=True)
    assert problem.status == cp.OPTIMAL


# ---------------------------------------------------------------- random expressions


def _expressions() -> st.SearchStrategy[Callable[[dict[str, cp.Leaf]], cp.Expression]]:
    """Scalar expressions over two variables, two parameters and constants (as builders)."""
    leaves = st.sampled_from(["x", "y", "g", "h", "2.0", "-1.5"]).map(
        lambda name: (lambda env: env[name] if name in env else float(name)))
    unary = [cp.exp, cp.square, cp.log, cp.abs, lambda e: -e, cp.sqrt]
    binary = [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: cp.maximum(a, b)]

    def extend(children):
        one = st.tuples(st.sampled_from(unary), children).map(
            lambda t: (lambda env: t[0](t[1](env))))
        two = st.tuples(st.sampled_from(binary), children, children).map(
            lambda t: (lambda env: t[0](cp.Constant(0.0) + t[1](env), t[2](env))))
        return one | two

    return st.recursive(leaves, extend, max_leaves=6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # cvxpy evaluates e.g. log(-1.5)
@settings(max_examples=80, deadline=None)
@given(_expressions(), st.booleans())
def test_random_problems_follow_cvxpy_verdict(build, maximize: bool) -> None:
    env = {"x": cp.Variable(name="x"), "y": cp.Variable(nonneg=True, name="y"),
           "g": cp.Parameter(name="g"), "h": cp.Parameter(nonneg=True, name="h")}
    expr = build(env)
    objective = cp.Maximize(expr) if maximize else cp.Minimize(expr)
    problem = cp.Problem(objective, [env["x"] >= -1, expr <= 10])
    report = check_dpp(problem)
    assert (report.violations == ()) == problem.is_dpp()
    assert report.ok == problem.is_dpp()
    for violation in report.violations:
        assert violation.expression in str(expr) + str(problem.constraints[1])
        assert violation.location == "objective" or violation.location.startswith(
            "constraint 1: ")
        assert violation.hint


def test_unnamed_leaves_are_called_by_their_place_in_the_users_lists():
    """cvxpy's generated names (param61, var4) mean nothing to the user: a report names an
    unnamed leaf by its place in the list passed (or among the problem's variables)."""
    import re

    M, c, z = cp.Parameter((2, 2)), cp.Parameter(2), cp.Parameter(2)
    y, w = cp.Variable(2), cp.Variable(2)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(y - z) + cp.sum(w)),
                      [cp.sum_squares(M @ (y - c)) <= 1, w >= 0])
    with pytest.raises(DPPError) as err:
        dpplayers.compile(prob, parameters=[z, M, c], variables=[w, y])
    text = str(err.value)
    assert "parameters[1] @ (variables[1] + -parameters[2])" in text
    assert not re.search(r"\b(param|var)\d+\b", text), text
    report = dpplayers.check_dpp(prob)  # default lists: problem.parameters(), .variables()
    order = [p.id for p in prob.parameters()]
    assert f"parameters[{order.index(M.id)}] @" in report.violations[0].expression
