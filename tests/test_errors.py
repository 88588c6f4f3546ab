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


def fault_calls(prob, A, b, x):
    """fault ↦ (call on a layer class, cvxpylayers' key phrase): build the layer, then call
    it with the fault's values (as arrays of the layer's framework)."""
    stranger = cp.Variable(3, name="stranger")
    non_dpp = cp.Problem(cp.Minimize(cp.sum_squares(x)), [A @ x <= cp.multiply(b, b)])
    ones = lambda L, *shape: (torch.ones(*shape, dtype=torch.float64)
                              if "torch" in L.__module__ else np.ones(shape))
    call = lambda *shapes: lambda L: L(prob, [A, b], [x])(*(ones(L, *s) for s in shapes))
    return {
        "count": (call((2, 3)), "A tensor must be provided for each CVXPY parameter"),
        "shape": (call((3, 2), (2,)), "Invalid parameter shape"),
        "batch": (call((2, 2, 3), (3, 2)), "Inconsistent batch sizes"),
        "parameters": (lambda L: L(prob, [A], [x]),
                       "The layer's parameters must exactly match problem.parameters"),
        "variables": (lambda L: L(prob, [A, b], [stranger]),
                      "must be a subset of problem.variables or a constraint dual variable"),
        "dpp": (lambda L: L(non_dpp, [A, b], [x]), "Problem must be DPP"),
    }


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_same_exception_types_and_key_phrases_as_cvxpylayers(framework):
    reference_module = pytest.importorskip(f"cvxpylayers.{framework}")
    ours = TorchLayer if framework == "torch" else JaxLayer
    prob, (A, b), (x,) = lp(named=True)
    for fault, (call, phrase) in fault_calls(prob, A, b, x).items():
        reference = their_error(lambda: call(reference_module.CvxpyLayer))
        assert phrase in str(reference), (fault, reference)
        with pytest.raises(type(reference)) as info:
            call(ours)
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


# ---------------------------------------------------------------------------- item 14


def sdp_layer_problem():
    """An SDP with a symmetric C and a PSD Q (parameters unset): minimise ⟨C, X⟩ + ‖X‖²_F
    s.t. X ⪰ Q/4, tr X = 1. Smooth at generic C, Q."""
    C = cp.Parameter((3, 3), symmetric=True, name="C")
    Q = cp.Parameter((3, 3), PSD=True, name="Q")
    X = cp.Variable((3, 3), symmetric=True, name="X")
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X)),
                      [X - Q / 4 >> 0, cp.trace(X) == 1])
    return prob, [C, Q], [X]


def sdp_points(seed):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((3, 3))  # not symmetric
    L = rng.standard_normal((3, 3)) * 0.3
    Q = L @ L.T + 0.1 * np.eye(3) + 0.05 * np.triu(rng.standard_normal((3, 3)), 1)
    return C, Q


def sym(a):
    return (a + np.swapaxes(a, -1, -2)) / 2


TIGHT = {"eps": 1e-11, "max_iters": 200_000}


def test_asymmetric_values_are_symmetrised_with_one_warning():
    prob, params, variables = sdp_layer_problem()
    prog = dpplayers.compile(prob, params, variables)
    for seed in (0, 1):
        C, Q = sdp_points(seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sol = prog.solve(C, Q, solver_args=TIGHT)
            prog.solve(C, Q, solver_args=TIGHT)
        named = [str(w.message) for w in caught if "symmetric part" in str(w.message)]
        # once per layer and parameter: both C and Q on the first call, nothing after
        assert len(named) == (2 if seed == 0 else 0), named
        if seed == 0:
            assert "parameter 'C'" in named[0] and "parameter 'Q'" in named[1]
        ref = prog.solve(sym(C), sym(Q), solver_args=TIGHT)
        np.testing.assert_allclose(sol.values[0], ref.values[0], atol=1e-12)
        # CVXPY's own solve at the symmetric parts
        params[0].value, params[1].value = sym(C), sym(Q)
        prob.solve(solver=cp.CLARABEL)
        np.testing.assert_allclose(sol.values[0], variables[0].value, atol=1e-6)
        W = np.arange(9.0).reshape(3, 3)
        g, g_ref = sol.vjp(W), ref.vjp(W)
        for a, b in zip(g, g_ref):
            np.testing.assert_allclose(a, b, atol=1e-10)
            np.testing.assert_allclose(a, a.T, atol=1e-12)  # sym of the gradient
        dC = np.arange(9.0).reshape(3, 3) / 9  # jvp: tangent dX ↦ sym(dX)
        np.testing.assert_allclose(sol.jvp(dC, None)[0], ref.jvp(sym(dC), None)[0], atol=1e-10)


def test_psd_check_applies_to_the_symmetric_part():
    prob, params, variables = sdp_layer_problem()
    prog = dpplayers.compile(prob, params, variables)
    C = np.eye(3)
    skew = np.array([[0.0, 3.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog.solve(C, 0.1 * np.eye(3) + skew)  # sym part 0.1 I: PSD, accepted
        with pytest.raises(ParameterError, match="parameter 'Q' is declared PSD"):
            prog.solve(C, np.diag([1.0, -1.0, 1.0]) + skew)  # sym part indefinite
        with pytest.raises(ParameterError,
                           match=r"parameter 'Q' \(batch element 1\) is declared PSD"):
            prog.solve(C, np.stack([np.eye(3) + skew, -np.eye(3) + skew]))


def test_torch_gradcheck_on_unsymmetrised_sdp_inputs():
    prob, params, variables = sdp_layer_problem()
    layer = TorchLayer(prob, params, variables, solver_args=TIGHT)
    for seed in (0, 1):
        C, Q = (torch.tensor(v, requires_grad=True) for v in sdp_points(seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert torch.autograd.gradcheck(layer, (C, Q), eps=1e-6, atol=1e-5, rtol=1e-4,
                                            check_forward_ad=True)


def test_jax_check_grads_on_unsymmetrised_sdp_inputs():
    import jax
    from jax.test_util import check_grads

    jax.config.update("jax_enable_x64", True)
    prob, params, variables = sdp_layer_problem()
    layer = JaxLayer(prob, params, variables, solver_args=TIGHT)
    for seed in (0, 1):
        C, Q = sdp_points(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_grads(lambda c, q: layer(c, q)[0], (C, Q), order=1, modes=("fwd", "rev"),
                        eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["sdp_lambda_max", "sdp_psd_variable", "dual_psd", "qp_optnet"])
def test_zoo_layers_see_only_the_symmetric_part(name):
    """Whatever cvxpy does with a symmetric/PSD parameter, the compiled maps must read only
    sym(X): values and vjp at X equal those at sym(X) (and the vjp is symmetric)."""
    from helpers import CASES

    case = CASES[name]()
    prog = dpplayers.compile(case.problem, list(case.parameters), list(case.variables),
                             solver="CLARABEL")
    square = [s.symmetric or s.psd or s.nsd for s in prog.layout.specs]
    rng = np.random.default_rng(4)
    for _ in range(2):
        values = case.sample(rng)
        skewed = [v + 0.2 * np.triu(rng.standard_normal(v.shape), 1) if sq else v
                  for v, sq in zip(values, square)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = prog.solve(*skewed)
        b = prog.solve(*[sym(v) if sq else v for v, sq in zip(skewed, square)])
        for va, vb in zip(a.values, b.values):
            np.testing.assert_allclose(va, vb, atol=1e-12)
        w = [np.linspace(-1, 1, o.size).reshape(o.shape) for o in prog.retrieval.outputs]
        for ga, gb, sq in zip(a.vjp(*w), b.vjp(*w), square):
            np.testing.assert_allclose(ga, gb, atol=1e-9)
            if sq:
                np.testing.assert_allclose(ga, ga.T, atol=1e-12)


@pytest.mark.parametrize("how", ["solve", "torch", "jax"])
def test_complex_values_for_a_real_parameter_are_refused_by_name(how: str) -> None:
    """numpy's cast would drop the imaginary part with only a ComplexWarning; a purely
    real complex array is accepted and solves like its real part (CVXPY's answer)."""
    p = cp.Parameter(2, name="p")
    x = cp.Variable(2)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [x >= 0])
    bad = np.array([1 + 1j, 2 - 1j])
    if how == "solve":
        prog = dpplayers.compile(problem, [p], [x])
        with pytest.raises(dpplayers.ParameterError, match="parameter 'p' has complex entries"):
            prog.solve(bad)
        (value,) = prog.solve(np.array([1.0 + 0j, -2.0 + 0j])).values
    elif how == "torch":
        layer = TorchLayer(problem, parameters=[p], variables=[x])
        with pytest.raises(dpplayers.ParameterError, match="parameter 'p' has complex entries"):
            layer(torch.tensor(bad))
        (value,) = layer(torch.tensor([1.0 + 0j, -2.0 + 0j]))
        value = value.numpy()
    else:
        layer = JaxLayer(problem, parameters=[p], variables=[x])
        with pytest.raises(dpplayers.ParameterError, match="parameter 'p' has complex dtype"):
            layer(bad)
        (value,) = layer(np.array([1.0, -2.0]))
    p.value = np.array([1.0, -2.0])
    problem.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(value, x.value, atol=1e-6)


def test_a_parameter_listed_twice_is_refused_by_name() -> None:
    """[p, p] took two values and added their effects (y = (0, 2, 4) for (1, 2, 3) and
    (-1, 0, 1)): refused. A variable requested twice stays allowed (each output returned)."""
    p, y = cp.Parameter(3, name="p"), cp.Variable(3, name="y")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(y - p)), [y <= 5])
    with pytest.raises(ParameterError, match=r"'p' is listed twice in `parameters` \(positions 0 and 1\)"):
        dpplayers.compile(problem, [p, p], [y])
    first, second = dpplayers.compile(problem, [p], [y, y]).solve(np.array([1.0, 6.0, -2.0])).values
    np.testing.assert_allclose(first, [1.0, 5.0, -2.0], atol=1e-6)
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ParameterError, match="listed twice"):
        TorchLayer(problem, parameters=[p, p], variables=[y])


def test_an_empty_batch_is_refused_by_name() -> None:
    p, y = cp.Parameter(2, name="p"), cp.Variable(2)
    prog = dpplayers.compile(cp.Problem(cp.Minimize(cp.sum_squares(y - p)), [y >= 0]), [p], [y])
    with pytest.raises(ParameterError, match=r"parameter 'p' has batch size 0"):
        prog.solve(np.zeros((0, 2)))
