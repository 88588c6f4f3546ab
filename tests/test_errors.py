"""Issue #17 items 12 and 18: clear errors that name the user's parameter or variable, the
exception types and key phrases of cvxpylayers for the same faults, CVXPY's rule for
pos=True values, and mixed-integer problems refused by name."""

import re
import warnings

import cvxpy as cp
import numpy as np
import pytest

import dpplayers
from dpplayers import DPPError, ParameterError

torch = pytest.importorskip("torch")
cvxpylayers_torch = pytest.importorskip("cvxpylayers.torch")

from dpplayers.jax import CvxpyLayer as JaxLayer  # noqa: E402
from dpplayers.torch import CvxpyLayer as TorchLayer  # noqa: E402

GENERATED = re.compile(r"\b(param|var)\d+\b")  # cvxpy's generated names


def lp(named: bool):
    """minimise ‖x‖² s.t. A x ≤ b, parameters unset; named or not."""
    A = cp.Parameter((2, 3), name="A" if named else None)
    b = cp.Parameter(2, name="b" if named else None)
    x = cp.Variable(3, name="x" if named else None)
    return cp.Problem(cp.Minimize(cp.sum_squares(x - 1)), [A @ x <= b]), [A, b], [x]


def three_ways(prob, params, variables):
    """solve(values) through the NumPy core, the torch layer and the JAX layer."""
    prog = dpplayers.compile(prob, params, variables)
    tl, jl = TorchLayer(prob, params, variables), JaxLayer(prob, params, variables)
    as_torch = lambda v: v if v is None else torch.as_tensor(v)
    return {"numpy": prog.solve, "torch": lambda *v: tl(*map(as_torch, v)), "jax": jl}


# ---------------------------------------------------------------------------- item 18


@pytest.mark.parametrize("named", [True, False])
def test_none_value_names_the_missing_parameter(named):
    ways = three_ways(*lp(named))
    want = "parameter 'b'" if named else "parameter #1 (shape (2,))"
    for where, solve in ways.items():
        with pytest.raises(ParameterError, match=re.escape(want) + ".*no value \\(None\\)"):
            solve(np.ones((2, 3)), None)
        with pytest.raises(ParameterError, match="A tensor must be provided for each CVXPY "
                           "parameter"):
            solve(np.ones((2, 3)))


@pytest.mark.parametrize("named", [True, False])
def test_unnamed_parameters_are_named_by_position_and_shape(named):
    prog = dpplayers.compile(*lp(named))
    A, b = ("parameter 'A'", "parameter 'b'") if named else (
        "parameter #0 (shape (2, 3))", "parameter #1 (shape (2,))")
    faults = [
        ((np.ones((3, 2)), np.ones(2)), A + " expects shape (2, 3)"),
        ((np.ones((2, 2, 3)), np.ones((3, 2))), b + " has batch size 3"),
        ((np.ones((2, 3)), np.array([1.0, np.nan])), b + " has NaN or Inf"),
    ]
    for values, message in faults:
        with pytest.raises(ParameterError) as info:
            prog.solve(*values)
        assert message in str(info.value)
        assert not GENERATED.search(str(info.value)), str(info.value)
    sol = prog.solve(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ParameterError) as info:
        sol.jvp(np.ones((2, 3)), np.ones(3))
    assert f"tangent for {b}" in str(info.value)
    for output in prog.retrieval.outputs:
        assert not GENERATED.search(output.name)


def test_attribute_errors_name_unnamed_parameter():
    c = cp.Parameter(2, nonneg=True)
    x = cp.Variable(2)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x))), [c], [x])
    with pytest.raises(ParameterError, match=re.escape("parameter #0 (shape (2,)) must be "
                                                       "nonnegative")):
        prog.solve(np.array([1.0, -1.0]))


def cvxpy_solution(prob, params, values, x):
    for p, v in zip(params, values):
        p.value = v
    prob.solve(solver=cp.CLARABEL)
    return x.value


@pytest.mark.parametrize("attr, sign", [("pos", 1.0), ("neg", -1.0)])
def test_zero_is_a_valid_pos_or_neg_value_outside_gp(attr, sign):
    """CVXPY accepts pos=True / neg=True parameters equal to 0 (its check projects onto the
    closed orthant); so do we, with CVXPY's solution, and still refuse the wrong sign."""
    c = cp.Parameter(2, name="c", **{attr: True})
    x = cp.Variable(2)
    prob = cp.Problem(cp.Minimize(sign * c @ x + cp.sum_squares(x - 1)), [x >= -2])
    prog = dpplayers.compile(prob, [c], [x])
    for value in (np.array([0.0, 1.5]) * sign, np.array([0.7, 0.0]) * sign):
        got = prog.solve(value).values[0]
        np.testing.assert_allclose(got, cvxpy_solution(prob, [c], [value], x), atol=1e-6)
    word = "positive" if attr == "pos" else "negative"
    with pytest.raises(ParameterError, match=f"parameter 'c' must be {word}"):
        prog.solve(np.array([-1.0, 1.0]) * sign)


def test_gp_parameter_still_must_be_strictly_positive():
    a = cp.Parameter(pos=True, name="a")
    x = cp.Variable(pos=True)
    prob = cp.Problem(cp.Minimize(x + 1 / x), [x >= a])
    prog = dpplayers.compile(prob, [a], [x], gp=True)
    np.testing.assert_allclose(prog.solve(2.0).values[0], 2.0, atol=1e-5)
    with pytest.raises(ParameterError, match="parameter 'a' must be positive"):
        prog.solve(0.0)


def their_error(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - the reference's type is what we compare
            return err
    raise AssertionError("cvxpylayers raised nothing")


def test_same_exception_types_and_key_phrases_as_cvxpylayers():
    prob, (A, b), (x,) = lp(named=True)
    theirs = cvxpylayers_torch.CvxpyLayer(prob, [A, b], [x])
    ours = TorchLayer(prob, [A, b], [x])
    stranger = cp.Variable(3, name="stranger")
    non_dpp = cp.Problem(cp.Minimize(cp.sum_squares(x)), [A @ x <= cp.multiply(b, b)])
    t = lambda *shape: torch.ones(*shape, dtype=torch.float64)
    faults = {  # fault: (call on a layer class or instance, cvxpylayers' key phrase)
        "count": (lambda L: (ours if L is TorchLayer else theirs)(t(2, 3)),
                  "A tensor must be provided for each CVXPY parameter"),
        "shape": (lambda L: (ours if L is TorchLayer else theirs)(t(3, 2), t(2)),
                  "Invalid parameter shape"),
        "batch": (lambda L: (ours if L is TorchLayer else theirs)(t(2, 2, 3), t(3, 2)),
                  "Inconsistent batch sizes"),
        "parameters": (lambda L: L(prob, [A], [x]),
                       "The layer's parameters must exactly match problem.parameters"),
        "variables": (lambda L: L(prob, [A, b], [stranger]),
                      "must be a subset of problem.variables or a constraint dual variable"),
        "dpp": (lambda L: L(non_dpp, [A, b], [x]), "Problem must be DPP"),
    }
    for fault, (call, phrase) in faults.items():
        reference = their_error(lambda: call(cvxpylayers_torch.CvxpyLayer))
        assert phrase in str(reference), (fault, reference)
        with pytest.raises(type(reference)) as info:
            call(TorchLayer)
        assert phrase in str(info.value), (fault, info.value)
        assert isinstance(info.value, (DPPError, ParameterError, dpplayers.VariableError)), fault


# ---------------------------------------------------------------------------- item 12


@pytest.mark.parametrize("attr", ["integer", "boolean"])
def test_mixed_integer_problems_are_refused_by_name(attr):
    p = cp.Parameter(2, name="p")
    z = cp.Variable(2, name="z", **{attr: True})
    w = cp.Variable(2)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(z - p) + cp.sum_squares(w - p)))
    report = dpplayers.check_dpp(prob, [p], [w])
    assert not report.ok
    assert "z" in str(report) and "mixed-integer" in str(report)
    for build in (lambda: dpplayers.compile(prob, [p], [w]), lambda: TorchLayer(prob, [p], [w]),
                  lambda: JaxLayer(prob, [p], [w])):
        with pytest.raises(DPPError, match="(?s)mixed-integer.*'z'|'z'.*mixed-integer"):
            build()
    unnamed = cp.Problem(cp.Minimize(cp.sum_squares(cp.Variable(3, **{attr: True}) - 1) + p @ w))
    with pytest.raises(DPPError, match=re.escape("shape (3,)")):
        dpplayers.compile(unnamed, [p], [w])
