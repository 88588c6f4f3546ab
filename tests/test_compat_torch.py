"""Drop-in compatibility of dpplayers.torch.CvxpyLayer with cvxpylayers.torch.CvxpyLayer.

Written from cvxpylayers' documented API (its README: the layer's arguments, calling it on
tensors, ``.backward()``, batching, dual variables, ``gp=True``, ``solver_args``) and from
the argmin layers and OptNet QP of its examples. Every test runs the same call through both
layers, each built on its own copy of the problem, and checks the outputs and gradients
against each other and against an oracle independent of both: a closed form, CVXPY's own
solve, or central differences of CVXPY solves. ``torch.autograd.gradcheck`` covers dpplayers
on every cone. Errors must have the exception type cvxpylayers raises (or a subclass).

Where cvxpylayers itself cannot take a call (power-cone gradients, Clarabel with SCS's
``eps``), only dpplayers is checked, against the independent oracle.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
cvxpylayers_torch = pytest.importorskip("cvxpylayers.torch")

import compat_examples as ex
from diffcp import SolverError as DiffcpSolverError

import dpplayers.torch as dpplayers_torch
from dpplayers.torch import CvxpyLayer

#: the same solver_args for both layers in parity checks (SCS, tight)
PARITY = {"eps": 1e-9, "max_iters": 100_000}
#: dpplayers' settings for gradcheck: finite differences with step 1e-6 need ~1e-11 accuracy
GRADCHECK = {"eps": 1e-12, "max_iters": 200_000}
#: on the log-log programs SCS reaches 1e-12 only after max_iters: 1e-10, then dpplayers'
#: Newton refinement of the KKT residual
GRADCHECK_GP = {"eps": 1e-10, "refine": 3}

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword",  # cvxpylayers' own
    "ignore:Solved/Inaccurate",
)


# ------------------------------------------------------------------------------ helpers


def build_pair(build, **kwargs):
    """(ours, theirs): dpplayers' and cvxpylayers' layers on separate copies of a problem."""
    mine, other = build(), build()
    ours = CvxpyLayer(mine.problem, parameters=mine.parameters, variables=mine.variables,
                      gp=mine.gp, **kwargs)
    theirs = cvxpylayers_torch.CvxpyLayer(other.problem, parameters=other.parameters,
                                          variables=other.variables, gp=other.gp, **kwargs)
    return ours, theirs


def tensors(values, requires_grad=True):
    return [torch.tensor(np.asarray(v, dtype=float), requires_grad=requires_grad) for v in values]


def sample(build, seed, batch=None):
    """Parameter values (NumPy), stacked along a leading axis of size ``batch`` if given."""
    rng = np.random.default_rng(seed)
    if batch is None:
        return build().sample(rng)
    return [np.stack(v) for v in zip(*(build().sample(rng) for _ in range(batch)))]


def oracle(build, values):
    """Expected outputs for one unbatched element: the closed form if any, else CVXPY's."""
    example = build()
    if example.closed_form is not None:
        return example.closed_form(*values)
    return ex.cvxpy_outputs(build, values)


def weights_like(outputs, seed=11):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(o.shape)) for o in outputs]


def weighted_loss(outputs, weights):
    return sum((o * torch.as_tensor(w, dtype=o.dtype)).sum() for o, w in zip(outputs, weights))


def gradients(layer, params, weights, **call):
    outputs = layer(*params, **call)
    return torch.autograd.grad(weighted_loss(outputs, weights), params)


def sym(g, symmetric):
    """The part of a gradient that is defined for a symmetric parameter."""
    return (g + g.mT) / 2 if symmetric else g


def close(a, b, atol, rtol=0.0):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


def check_parity(build, seed=0, value_tol=1e-6, grad_tol=1e-5, fd_tol=1e-3, their_grad=True):
    """Same call through both layers: outputs match each other and the oracle; gradients
    of a weighted loss match each other (unless ``their_grad`` is False) and a central
    difference of CVXPY solves."""
    ours, theirs = build_pair(build)
    values = sample(build, seed)
    p_ours, p_theirs = tensors(values), tensors(values)
    out_ours = ours(*p_ours, solver_args=PARITY)
    out_theirs = theirs(*p_theirs, solver_args=PARITY)
    assert len(out_ours) == len(out_theirs)
    for a, b, want in zip(out_ours, out_theirs, oracle(build, values)):
        close(a.detach(), b.detach(), value_tol)
        close(a.detach(), want, value_tol)
    weights = weights_like(out_ours)
    symmetric = ex.symmetric_parameters(build())
    g_ours = [sym(g, s) for g, s in zip(gradients(ours, p_ours, weights, solver_args=PARITY),
                                       symmetric)]
    if their_grad:
        g_theirs = [sym(g, s) for g, s in
                    zip(gradients(theirs, p_theirs, weights, solver_args=PARITY), symmetric)]
        for a, b in zip(g_ours, g_theirs):
            close(a, b, grad_tol, 1e-4)
    rng = np.random.default_rng(seed + 100)
    direction = [rng.standard_normal(np.shape(v)) for v in values]
    direction = [(d + d.T) / 2 if s else d for d, s in zip(direction, symmetric)]
    fd = ex.cvxpy_directional(build, values, direction, weights)
    along = sum(float((g * torch.as_tensor(d)).sum()) for g, d in zip(g_ours, direction))
    assert abs(along - fd) <= fd_tol * max(1.0, abs(fd)), (along, fd)


def raised(fn):
    """The exception ``fn()`` raises (None if it returns)."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the type is what the test checks
        return err
    return None


def assert_same_error(ours_fn, theirs_fn):
    """cvxpylayers raises; dpplayers raises the same exception type (or a subclass)."""
    theirs = raised(theirs_fn)
    assert theirs is not None, "cvxpylayers accepted the faulty input"
    ours = raised(ours_fn)
    assert isinstance(ours, type(theirs)), (type(ours), type(theirs), ours)


# ------------------------------------------------------------------- the README example


def test_readme_example_values_and_backward():
    """The README's call: tensors requiring grad in, a tuple out, ``.sum().backward()``."""
    ours, theirs = build_pair(ex.readme_lp)
    for seed in (0, 1):  # two parameter points: no value is frozen at compile time
        values = sample(ex.readme_lp, seed)
        grads = []
        for layer in (ours, theirs):
            A, b = tensors(values)
            (solution,) = layer(A, b, solver_args=PARITY)
            assert solution.shape == (2,)
            solution.sum().backward()
            grads.append((A.grad, b.grad))
            close(solution.detach(), ex.cvxpy_outputs(ex.readme_lp, values)[0], 1e-6)
        for g_ours, g_theirs in zip(*grads):
            close(g_ours, g_theirs, 1e-5, 1e-4)


@pytest.mark.parametrize("seed", [0, 3])
def test_readme_example_gradient_matches_cvxpy_differences(seed):
    check_parity(ex.readme_lp, seed)


def test_readme_example_float32_inputs():
    """The README feeds ``torch.randn`` (float32) tensors; both layers solve them alike."""
    ours, theirs = build_pair(ex.readme_lp)
    values = sample(ex.readme_lp, 2)
    outs = []
    for layer in (ours, theirs):
        A, b = (torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in values)
        (solution,) = layer(A, b)
        solution.sum().backward()
        assert A.grad.shape == A.shape and b.grad.shape == b.shape
        outs.append(solution.detach().double())
    close(outs[0], outs[1], 1e-4)


def test_gradient_for_some_parameters_and_no_grad():
    """Only b requires grad: A gets none, b the same as cvxpylayers'; under no_grad the
    outputs carry no graph."""
    values = sample(ex.readme_lp, 5)
    grads = []
    for layer in build_pair(ex.readme_lp):
        A, b = tensors(values[:1], False)[0], tensors(values[1:])[0]
        (x,) = layer(A, b, solver_args=PARITY)
        x.sum().backward()
        assert A.grad is None
        grads.append(b.grad)
        with torch.no_grad():
            (y,) = layer(A, b, solver_args=PARITY)
        assert not y.requires_grad
        close(y, x.detach(), 1e-9)
    close(grads[0], grads[1], 1e-5, 1e-4)


def test_readme_example_at_eps_1e_10():
    """The README's problem at torch.manual_seed(0)'s data: CVXPY's SCS (eps 1e-10) and
    cvxpylayers converge in ~125 iterations; dpplayers once forced QDLDL here and hit
    max_iters (issue #17 item 11)."""
    A = np.array([[1.54099611, -0.29342891], [-2.17878938, 0.56843128],
                  [-1.08452234, -1.3985954]])
    b = np.array([0.40334685, 0.83802633, -0.71925758])
    ours, theirs = build_pair(ex.readme_lp)
    args = {"eps": 1e-10}
    (x_theirs,) = theirs(*tensors([A, b]), solver_args=args)
    (x_ours,) = ours(*tensors([A, b]), solver_args=args)
    close(x_ours.detach(), x_theirs.detach(), 1e-7)


# ------------------------------------------------------------------------------ batching


@pytest.mark.parametrize("batch", [1, 5])  # 5: dpplayers' thread-pool path
def test_batched_call_matches_per_element(batch):
    """A leading batch axis on every parameter: outputs (and gradients) per element."""
    ours, theirs = build_pair(ex.readme_lp)
    values = sample(ex.readme_lp, 4, batch=batch)
    p_ours, p_theirs = tensors(values), tensors(values)
    (x_ours,) = ours(*p_ours, solver_args=PARITY)
    (x_theirs,) = theirs(*p_theirs, solver_args=PARITY)
    assert x_ours.shape == x_theirs.shape == (batch, 2)
    close(x_ours.detach(), x_theirs.detach(), 1e-6)
    for i in range(batch):
        close(x_ours[i].detach(), ex.cvxpy_outputs(ex.readme_lp, [v[i] for v in values])[0], 1e-6)
    weights = weights_like([x_ours])
    for a, b in zip(gradients(ours, p_ours, weights, solver_args=PARITY),
                    gradients(theirs, p_theirs, weights, solver_args=PARITY)):
        assert a.shape == b.shape
        close(a, b, 1e-5, 1e-4)


def test_mixed_batched_and_unbatched_parameters_broadcast():
    """A batched, b shared: b broadcasts, and its gradient sums over the batch."""
    ours, theirs = build_pair(ex.readme_lp)
    A_values = sample(ex.readme_lp, 5, batch=3)[0]
    b_value = sample(ex.readme_lp, 6)[1]
    results = []
    for layer in (ours, theirs):
        A, b = tensors([A_values, b_value])
        (x,) = layer(A, b, solver_args=PARITY)
        assert x.shape == (3, 2)
        (x * torch.arange(1.0, 7.0, dtype=x.dtype).reshape(3, 2)).sum().backward()
        assert A.grad.shape == (3, 3, 2) and b.grad.shape == (3,)
        results.append((x.detach(), A.grad, b.grad))
    for a, b in zip(*results):
        close(a, b, 1e-5, 1e-4)
    for i in range(3):
        close(results[0][0][i], ex.cvxpy_outputs(ex.readme_lp, [A_values[i], b_value])[0], 1e-6)
    # the shared parameter's gradient is the sum of the per-element ones
    per_element = torch.zeros(3, dtype=torch.float64)
    for i in range(3):
        A, b = tensors([A_values[i], b_value])
        (x,) = ours(A, b, solver_args=PARITY)
        (x * torch.arange(2.0 * i + 1, 2.0 * i + 3, dtype=x.dtype)).sum().backward()
        per_element += b.grad
    close(results[0][2], per_element, 1e-8)


@pytest.mark.parametrize("name", ["exp_softmax", "psd_plain"])
def test_batched_call_on_curved_cones(name):
    build = ex.CONES[name]
    ours, theirs = build_pair(build)
    values = sample(build, 7, batch=2)
    outs = [layer(*tensors(values, requires_grad=False), solver_args=PARITY)[0]
            for layer in (ours, theirs)]
    close(outs[0], outs[1], 1e-6)
    for i in range(2):
        close(outs[0][i], oracle(build, [v[i] for v in values])[0], 1e-6)


# --------------------------------------------------------------------------------- duals


@pytest.mark.parametrize("build", [ex.readme_duals, ex.box_projection_duals,
                                   ex.matrix_box_duals, ex.ball_projection_dual,
                                   ex.softmax_dual, ex.psd_projection],
                         ids=["readme_lp", "box_qp", "matrix_qp", "soc", "exp", "psd"])
def test_dual_variables_as_outputs(build):
    """``constraint.dual_variables[0]`` among ``variables``: multipliers as CVXPY defines
    them, with the same gradients as cvxpylayers'."""
    check_parity(build, seed=1)


# ---------------------------------------------------------------------------------- gp=True


def test_gp_readme_example():
    """The README's log-log convex program (gp=True), its exponent c a parameter."""
    check_parity(ex.readme_gp, value_tol=2e-6, grad_tol=1e-4, fd_tol=1e-3)


def test_gp_parameters_as_coefficients():
    check_parity(ex.gp_coefficients, value_tol=2e-6, grad_tol=1e-4, fd_tol=1e-3)


# ------------------------------------------------------------------------------ solver_args


def test_solver_args_at_construction_and_per_call():
    """Layer-wide solver_args are defaults; a call's own override them."""
    values = sample(ex.readme_lp, 8)
    ours, theirs = build_pair(ex.readme_lp, solver_args={"eps": 1e-9})
    want = ex.cvxpy_outputs(ex.readme_lp, values)[0]
    for layer in (ours, theirs):
        close(layer(*tensors(values, False))[0], want, 1e-6)
        close(layer(*tensors(values, False), solver_args={"max_iters": 100_000})[0], want, 1e-6)


@pytest.mark.parametrize("args", [
    {"eps": 1e-8},  # the README's example
    {"eps": 1e-8, "max_iters": 10_000, "acceleration_lookback": 0},  # its advice for SCS
])
def test_documented_solver_args(args):
    ours, theirs = build_pair(ex.ball_projection)
    values = sample(ex.ball_projection, 9)
    want = oracle(ex.ball_projection, values)[0]
    for layer in (ours, theirs):
        close(layer(*tensors(values, False), solver_args=args)[0], want, 1e-5)


def test_constructor_keywords():
    """cvxpylayers' keyword arguments: solver=None, gp, verbose, canon_backend, solver_args."""
    kwargs = {"solver": None, "gp": False, "verbose": False, "canon_backend": None,
              "solver_args": {"eps": 1e-9}}
    values = sample(ex.relu, 0)
    for module in (cvxpylayers_torch, dpplayers_torch):
        e = ex.relu()
        layer = module.CvxpyLayer(e.problem, parameters=e.parameters, variables=e.variables,
                                  **kwargs)
        close(layer(*tensors(values, False))[0], np.maximum(values[0], 0), 1e-6)


def test_call_keywords():
    """cvxpylayers' call signature: ``layer(*params, solver_args=..., warm_start=False)``."""
    values = sample(ex.relu, 1)
    for layer in build_pair(ex.relu):
        (y,) = layer(*tensors(values, False), solver_args=PARITY, warm_start=False)
        close(y, np.maximum(values[0], 0), 1e-6)


@pytest.mark.parametrize("args", [
    {"solve_method": "SCS"},
    {"solve_method": "Clarabel"},
    {"n_jobs_forward": 1},
    {"n_jobs_backward": 1},
    {"mode": "lsqr"},
    {"mode": "dense"},
    {"acceleration_lookback": 0},
    {"verbose": False},
], ids=lambda a: next(iter(a)) + "=" + str(next(iter(a.values()))))
def test_cvxpylayers_solver_options(args):
    """Options cvxpylayers passes on to diffcp are accepted, and the answer is unchanged."""
    ours, theirs = build_pair(ex.box_projection_duals)
    values = sample(ex.box_projection_duals, 2)
    want = oracle(ex.box_projection_duals, values)
    weights = weights_like(want)
    grads = []
    # cvxpylayers' diffcp hands SCS's `eps` to Clarabel, which rejects it: there the
    # reference gradient is cvxpylayers' at its default solver
    clarabel = args.get("solve_method") == "Clarabel"
    for layer in (ours, theirs):
        params = tensors(values)
        call_args = PARITY if clarabel and layer is theirs else {**PARITY, **args}
        outputs = layer(*params, solver_args=call_args)
        for got, expected in zip(outputs, want):
            close(got.detach(), expected, 1e-5)
        grads.append(torch.autograd.grad(weighted_loss(outputs, weights), params))
    for a, b in zip(*grads):
        close(a, b, 1e-5, 1e-4)


def test_iteration_limit_returns_inaccurate_point_with_warning():
    """cvxpylayers returns SCS's point at max_iters with a warning; so must we."""
    ours, theirs = build_pair(ex.ball_projection)
    values = sample(ex.ball_projection, 3)
    for layer in (theirs, ours):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (x,) = layer(*tensors(values, False), solver_args={"max_iters": 3})
        assert torch.isfinite(x).all()
        assert caught, "no warning about the inaccurate solve"


# ---------------------------------------------------------------------------------- errors


def test_error_wrong_number_of_parameters():
    ours, theirs = build_pair(ex.readme_lp)
    A, b = tensors(sample(ex.readme_lp, 0), False)
    assert_same_error(lambda: ours(A), lambda: theirs(A))
    assert_same_error(lambda: ours(A, b, b), lambda: theirs(A, b, b))


@pytest.mark.parametrize("shapes", [((3, 2), (4,)), ((2, 3), (3,)), ((3, 2), (2, 2, 3)),
                                    ((1, 1, 3, 2), (3,))],
                         ids=["wrong_shape", "transposed", "too_many_axes", "two_batch_axes"])
def test_error_wrong_shapes(shapes):
    ours, theirs = build_pair(ex.readme_lp)
    A, b = (torch.ones(s, dtype=torch.float64) for s in shapes)
    assert_same_error(lambda: ours(A, b), lambda: theirs(A, b))


def test_error_inconsistent_batch_sizes():
    ours, theirs = build_pair(ex.readme_lp)
    A, b = torch.ones(2, 3, 2, dtype=torch.float64), torch.ones(3, 3, dtype=torch.float64)
    assert_same_error(lambda: ours(A, b), lambda: theirs(A, b))


@pytest.mark.parametrize("fault", ex.construction_faults(), ids=lambda f: f[0])
def test_error_at_construction(fault):
    _, problem, parameters, variables, kwargs = fault
    assert_same_error(ex.construct(dpplayers_torch, problem, parameters,
                                 variables, **kwargs),
                      ex.construct(cvxpylayers_torch, problem, parameters, variables, **kwargs))


def test_error_parameters_as_a_set():
    x, A, b = cp.Variable(2), cp.Parameter((3, 2)), cp.Parameter(3)
    fit = cp.Problem(cp.Minimize(cp.pnorm(A @ x - b, 1)), [x >= 0])
    assert_same_error(ex.construct(dpplayers_torch, fit, {A, b}, [x]),
                      ex.construct(cvxpylayers_torch, fit, {A, b}, [x]))


@pytest.mark.parametrize("kind", ["infeasible", "unbounded"])
def test_error_solver_failure_is_a_diffcp_solver_error(kind):
    """cvxpylayers lets diffcp's SolverError through; code catching it must catch ours."""
    x, lo, hi = cp.Variable(2), cp.Parameter(2), cp.Parameter(2)
    if kind == "infeasible":
        problem, values = cp.Problem(cp.Minimize(cp.sum(x)), [x >= lo, x <= hi]), [1.0, 0.0]
    else:
        problem, values = cp.Problem(cp.Minimize(lo @ x), [x >= hi]), [-1.0, 0.0]
    ours = CvxpyLayer(problem, parameters=[lo, hi], variables=[x])
    theirs = cvxpylayers_torch.CvxpyLayer(problem, parameters=[lo, hi], variables=[x])
    args = [torch.full((2,), v, dtype=torch.float64) for v in values]
    assert isinstance(raised(lambda: theirs(*args)), DiffcpSolverError)
    assert isinstance(raised(lambda: ours(*args)), DiffcpSolverError)


# ------------------------------------------------------------- every cone: parity, gradcheck


@pytest.mark.parametrize("name", list(ex.CONES))
def test_parity_on_every_cone(name):
    # cvxpylayers' backward fails on power cones (diffcp 1.1.9's adjoint: "operands could
    # not be broadcast together"), so there only its values are compared
    check_parity(ex.CONES[name], seed=2, their_grad=name != "pow")


def gradcheck_layer(build, seed=3, batch=None, symmetrise=False):
    mine = build()
    layer = CvxpyLayer(mine.problem, parameters=mine.parameters, variables=mine.variables,
                       gp=mine.gp, solver_args=GRADCHECK_GP if mine.gp else GRADCHECK)
    symmetric = ex.symmetric_parameters(mine)

    def f(*params):
        if symmetrise:
            params = [(p + p.mT) / 2 if s else p for p, s in zip(params, symmetric)]
        return layer(*params)

    params = tensors(sample(build, seed, batch=batch))
    return torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5, rtol=1e-4,
                                    check_forward_ad=True)


@pytest.mark.parametrize("name", list(ex.CONES))
def test_gradcheck_on_every_cone(name):
    assert gradcheck_layer(ex.CONES[name])


@pytest.mark.parametrize("name", ["lp", "soc", "exp_softmax", "psd_plain"])
def test_gradcheck_batched(name):
    assert gradcheck_layer(ex.CONES[name], batch=2)


def test_gradcheck_sdp_symmetric_parameter_symmetrised():
    """An SDP with a symmetric parameter, fed symmetric inputs; the PSD dual included."""
    assert gradcheck_layer(ex.psd_projection, symmetrise=True)


def test_gradcheck_sdp_symmetric_parameter_as_given():
    """gradcheck perturbs one entry of the symmetric parameter at a time."""
    assert gradcheck_layer(ex.psd_projection)


def test_gradcheck_gp_coefficients():
    assert gradcheck_layer(ex.gp_coefficients)


def test_gradcheck_gp_readme_example():
    """(Passes despite issue #17 item 2: the wrong map is differentiated consistently.)"""
    assert gradcheck_layer(ex.readme_gp)
