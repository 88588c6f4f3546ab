"""Drop-in compatibility of dpplayers.jax.CvxpyLayer with cvxpylayers.jax.CvxpyLayer.

The JAX twin of test_compat_torch.py, written from cvxpylayers' documented API (its README:
calling the layer on arrays, ``jax.grad`` of the summed solution, batching, dual variables,
``gp=True``, ``solver_args``) and the problems of its examples (compat_examples.py). Each
test makes the same call through both layers, built on separate copies of a problem, and
checks outputs and gradients against each other and against an oracle independent of both
(closed forms, CVXPY's own solve, central differences of CVXPY solves).
``jax.test_util.check_grads`` covers dpplayers on every cone in both modes. Errors must have
the exception type cvxpylayers raises (or a subclass).

Where cvxpylayers itself cannot take a call (power-cone gradients, Clarabel with SCS's
``eps``), only dpplayers is checked, against the independent oracle.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest

jax = pytest.importorskip("jax")
cvxpylayers_jax = pytest.importorskip("cvxpylayers.jax")

import compat_examples as ex
import jax.numpy as jnp
from diffcp import SolverError as DiffcpSolverError
from jax.test_util import check_grads

import dpplayers.jax as dpplayers_jax
from dpplayers.jax import CvxpyLayer

#: the same solver_args for both layers in parity checks (SCS, tight)
PARITY = {"eps": 1e-9, "max_iters": 100_000}
#: dpplayers' settings for check_grads: differences with step 1e-6 need ~1e-11 accuracy
GRADCHECK = {"eps": 1e-12, "max_iters": 200_000}
#: on the log-log programs SCS reaches 1e-12 only after max_iters: 1e-10, then dpplayers'
#: Newton refinement of the KKT residual
GRADCHECK_GP = {"eps": 1e-10, "refine": 3}

pytestmark = pytest.mark.filterwarnings("ignore:Solved/Inaccurate")


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------ helpers


def build_pair(build, **kwargs):
    """(ours, theirs): dpplayers' and cvxpylayers' layers on separate copies of a problem."""
    mine, other = build(), build()
    ours = CvxpyLayer(mine.problem, parameters=mine.parameters, variables=mine.variables,
                      gp=mine.gp, **kwargs)
    theirs = cvxpylayers_jax.CvxpyLayer(other.problem, parameters=other.parameters,
                                        variables=other.variables, gp=other.gp, **kwargs)
    return ours, theirs


def arrays(values):
    return [jnp.asarray(np.asarray(v, dtype=np.float64)) for v in values]


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


def loss_of(layer, weights, **call):
    """θ ↦ ⟨weights, layer(θ)⟩."""
    return lambda *params: sum(jnp.sum(o * w) for o, w in zip(layer(*params, **call), weights))


def gradients(layer, params, weights, **call):
    return jax.grad(loss_of(layer, weights, **call), argnums=tuple(range(len(params))))(*params)


def sym(g, symmetric):
    """The part of a gradient that is defined for a symmetric parameter."""
    return (g + jnp.swapaxes(g, -1, -2)) / 2 if symmetric else g


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
    params = arrays(values)
    out_ours = ours(*params, solver_args=PARITY)
    out_theirs = theirs(*params, solver_args=PARITY)
    assert len(out_ours) == len(out_theirs)
    for a, b, want in zip(out_ours, out_theirs, oracle(build, values)):
        close(a, b, value_tol)
        close(a, want, value_tol)
    weights = weights_like(out_ours)
    symmetric = ex.symmetric_parameters(build())
    g_ours = [sym(g, s) for g, s in
              zip(gradients(ours, params, weights, solver_args=PARITY), symmetric)]
    if their_grad:
        g_theirs = [sym(g, s) for g, s in
                    zip(gradients(theirs, params, weights, solver_args=PARITY), symmetric)]
        for a, b in zip(g_ours, g_theirs):
            close(a, b, grad_tol, 1e-4)
    rng = np.random.default_rng(seed + 100)
    direction = [rng.standard_normal(np.shape(v)) for v in values]
    direction = [(d + d.T) / 2 if s else d for d, s in zip(direction, symmetric)]
    fd = ex.cvxpy_directional(build, values, direction, weights)
    along = sum(float(jnp.sum(g * d)) for g, d in zip(g_ours, direction))
    assert abs(along - fd) <= fd_tol * max(1.0, abs(fd)), (along, fd)


def raised(fn):
    """The exception ``fn()`` raises (None if it returns)."""
    try:
        jax.block_until_ready(fn())
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


def test_readme_example_values_and_grad():
    """The README's call: arrays in, a tuple out, ``jax.grad`` of the summed solution
    with respect to A and b (argnums as a list, Python's ``sum`` over the solution)."""
    ours, theirs = build_pair(ex.readme_lp)
    for seed in (0, 1):  # two parameter points: no value is frozen at compile time
        A, b = arrays(sample(ex.readme_lp, seed))
        want = ex.cvxpy_outputs(ex.readme_lp, [A, b])[0]
        grads = []
        for layer in (ours, theirs):
            (solution,) = layer(A, b, solver_args=PARITY)
            assert solution.shape == (2,)
            close(solution, want, 1e-6)
            dlayer = jax.grad(lambda A, b, layer=layer: sum(layer(A, b, solver_args=PARITY)[0]),
                              argnums=[0, 1])
            grads.append(dlayer(A, b))
        for g_ours, g_theirs in zip(*grads):
            close(g_ours, g_theirs, 1e-5, 1e-4)


@pytest.mark.parametrize("seed", [0, pytest.param(3, marks=pytest.mark.slow)])
def test_readme_example_gradient_matches_cvxpy_differences(seed):
    check_parity(ex.readme_lp, seed)


def test_readme_example_random_keys_in_default_precision():
    """The README draws A and b with jax.random (float32 without x64); both layers solve
    them alike and return float32."""
    key = jax.random.PRNGKey(0)
    _, k1, k2 = jax.random.split(key, 3)
    with jax.enable_x64(False):
        A, b = jax.random.normal(k1, shape=(3, 2)), jax.random.normal(k2, shape=(3,))
        ours, theirs = build_pair(ex.readme_lp)
        (x_ours,), (x_theirs,) = ours(A, b), theirs(A, b)
        assert x_ours.dtype == x_theirs.dtype == jnp.float32
        close(x_ours, x_theirs, 1e-4)


# ------------------------------------------------------------------------------ batching


@pytest.mark.parametrize("batch", [pytest.param(1, marks=pytest.mark.slow), 5])
def test_batched_call_matches_per_element(batch):
    ours, theirs = build_pair(ex.readme_lp)
    values = sample(ex.readme_lp, 4, batch=batch)
    params = arrays(values)
    (x_ours,), (x_theirs,) = ours(*params, solver_args=PARITY), theirs(*params, solver_args=PARITY)
    assert x_ours.shape == x_theirs.shape == (batch, 2)
    close(x_ours, x_theirs, 1e-6)
    for i in range(batch):
        close(x_ours[i], ex.cvxpy_outputs(ex.readme_lp, [v[i] for v in values])[0], 1e-6)
    weights = weights_like([x_ours])
    for a, b in zip(gradients(ours, params, weights, solver_args=PARITY),
                    gradients(theirs, params, weights, solver_args=PARITY)):
        close(a, b, 1e-5, 1e-4)


def test_mixed_batched_and_unbatched_parameters_broadcast():
    """A batched, b shared: b broadcasts, and its gradient sums over the batch."""
    ours, theirs = build_pair(ex.readme_lp)
    A = arrays(sample(ex.readme_lp, 5, batch=3))[0]
    b = arrays(sample(ex.readme_lp, 6))[1]
    weights = [np.arange(1.0, 7.0).reshape(3, 2)]
    results = []
    for layer in (ours, theirs):
        (x,) = layer(A, b, solver_args=PARITY)
        assert x.shape == (3, 2)
        gA, gb = gradients(layer, [A, b], weights, solver_args=PARITY)
        assert gA.shape == (3, 3, 2) and gb.shape == (3,)
        results.append((x, gA, gb))
    for a, c in zip(*results):
        close(a, c, 1e-5, 1e-4)
    per_element = sum(gradients(ours, [A[i], b], [weights[0][i]], solver_args=PARITY)[1]
                      for i in range(3))
    close(results[0][2], per_element, 1e-8)
    for i in range(3):
        close(results[0][0][i], ex.cvxpy_outputs(ex.readme_lp, [A[i], b])[0], 1e-6)


@pytest.mark.slow  # (the default run covers it in test_compat_torch.py)
@pytest.mark.parametrize("name", ["exp_softmax", "psd_plain"])
def test_batched_call_on_curved_cones(name):
    build = ex.CONES[name]
    ours, theirs = build_pair(build)
    values = sample(build, 7, batch=2)
    outs = [layer(*arrays(values), solver_args=PARITY)[0] for layer in (ours, theirs)]
    close(outs[0], outs[1], 1e-6)
    for i in range(2):
        close(outs[0][i], oracle(build, [v[i] for v in values])[0], 1e-6)


# --------------------------------------------------------------------------------- duals


@pytest.mark.parametrize("build", [
    ex.readme_duals, pytest.param(ex.box_projection_duals, marks=pytest.mark.slow),
    ex.matrix_box_duals, pytest.param(ex.ball_projection_dual, marks=pytest.mark.slow),
    pytest.param(ex.softmax_dual, marks=pytest.mark.slow), ex.psd_projection],
    ids=["readme_lp", "box_qp", "matrix_qp", "soc", "exp", "psd"])
def test_dual_variables_as_outputs(build):
    check_parity(build, seed=1)


# ---------------------------------------------------------------------------------- gp=True


def test_gp_readme_example():
    check_parity(ex.readme_gp, value_tol=2e-6, grad_tol=1e-4)


def test_gp_parameters_as_coefficients():
    check_parity(ex.gp_coefficients, value_tol=2e-6, grad_tol=1e-4)


# ------------------------------------------------------------------------------ solver_args


def test_solver_args_at_construction_and_per_call():
    values = sample(ex.readme_lp, 8)
    ours, theirs = build_pair(ex.readme_lp, solver_args={"eps": 1e-9})
    want = ex.cvxpy_outputs(ex.readme_lp, values)[0]
    for layer in (ours, theirs):
        close(layer(*arrays(values))[0], want, 1e-6)
        close(layer(*arrays(values), solver_args={"max_iters": 100_000})[0], want, 1e-6)


@pytest.mark.parametrize("args", [
    {"eps": 1e-8},  # the README's example
    {"eps": 1e-8, "max_iters": 10_000, "acceleration_lookback": 0},  # its advice for SCS
])
def test_documented_solver_args(args):
    ours, theirs = build_pair(ex.ball_projection)
    values = sample(ex.ball_projection, 9)
    want = oracle(ex.ball_projection, values)[0]
    for layer in (ours, theirs):
        close(layer(*arrays(values), solver_args=args)[0], want, 1e-5)


@pytest.mark.parametrize("kwargs", [
    {"solver": None, "gp": False, "canon_backend": None, "solver_args": {"eps": 1e-9}},
    {"verbose": False, "solver_args": {"eps": 1e-9}},
], ids=["solver_gp_canon_backend_solver_args", "verbose"])
def test_constructor_keywords(kwargs):
    values = sample(ex.relu, 0)
    for module in (cvxpylayers_jax, dpplayers_jax):
        e = ex.relu()
        layer = module.CvxpyLayer(e.problem, parameters=e.parameters, variables=e.variables,
                                  **kwargs)
        close(layer(*arrays(values))[0], np.maximum(values[0], 0), 1e-6)


def test_call_keywords():
    """cvxpylayers' call signature: ``layer(*params, solver_args=..., warm_start=False)``."""
    values = sample(ex.relu, 1)
    for layer in build_pair(ex.relu):
        (y,) = layer(*arrays(values), solver_args=PARITY, warm_start=False)
        close(y, np.maximum(values[0], 0), 1e-6)


@pytest.mark.parametrize("args", [
    {"solve_method": "SCS"},
    {"n_jobs_forward": 1},
    {"mode": "lsqr"},
    {"acceleration_lookback": 0},
], ids=lambda a: next(iter(a)) + "=" + str(next(iter(a.values()))))
def test_cvxpylayers_solver_options(args):
    """Options cvxpylayers passes on to diffcp are accepted, and the answer is unchanged."""
    ours, theirs = build_pair(ex.box_projection_duals)
    values = sample(ex.box_projection_duals, 2)
    params = arrays(values)
    want = oracle(ex.box_projection_duals, values)
    weights = weights_like(want)
    grads = []
    for layer in (ours, theirs):
        # values through jax.vjp: cvxpylayers passes diffcp's options (``mode``) to SCS
        # itself when no derivative is being taken, which SCS rejects
        outputs, pullback = jax.vjp(lambda *p: layer(*p, solver_args={**PARITY, **args}),
                                    *params)
        for got, expected in zip(outputs, want):
            close(got, expected, 1e-5)
        grads.append(pullback(tuple(jnp.asarray(w) for w in weights)))
    for a, b in zip(*grads):
        close(a, b, 1e-5, 1e-4)


def test_iteration_limit_returns_inaccurate_point_with_warning():
    ours, theirs = build_pair(ex.ball_projection)
    values = sample(ex.ball_projection, 3)
    for layer in (theirs, ours):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (x,) = layer(*arrays(values), solver_args={"max_iters": 3})
        assert jnp.isfinite(x).all()
        assert caught, "no warning about the inaccurate solve"


# ---------------------------------------------------------------------------------- errors


def test_error_wrong_number_of_parameters():
    ours, theirs = build_pair(ex.readme_lp)
    A, b = arrays(sample(ex.readme_lp, 0))
    assert_same_error(lambda: ours(A), lambda: theirs(A))
    assert_same_error(lambda: ours(A, b, b), lambda: theirs(A, b, b))


@pytest.mark.parametrize("shapes", [((3, 2), (4,)), ((2, 3), (3,)), ((3, 2), (2, 2, 3)),
                                    ((1, 1, 3, 2), (3,))],
                         ids=["wrong_shape", "transposed", "too_many_axes", "two_batch_axes"])
def test_error_wrong_shapes(shapes):
    ours, theirs = build_pair(ex.readme_lp)
    A, b = (jnp.ones(s) for s in shapes)
    assert_same_error(lambda: ours(A, b), lambda: theirs(A, b))


def test_error_inconsistent_batch_sizes():
    ours, theirs = build_pair(ex.readme_lp)
    A, b = jnp.ones((2, 3, 2)), jnp.ones((3, 3))
    assert_same_error(lambda: ours(A, b), lambda: theirs(A, b))


@pytest.mark.parametrize("fault", ex.construction_faults(), ids=lambda f: f[0])
def test_error_at_construction(fault):
    _, problem, parameters, variables, kwargs = fault
    assert_same_error(ex.construct(dpplayers_jax, problem, parameters, variables, **kwargs),
                      ex.construct(cvxpylayers_jax, problem, parameters, variables, **kwargs))


def test_error_parameters_as_a_set():
    x, A, b = cp.Variable(2), cp.Parameter((3, 2)), cp.Parameter(3)
    fit = cp.Problem(cp.Minimize(cp.pnorm(A @ x - b, 1)), [x >= 0])
    assert_same_error(ex.construct(dpplayers_jax, fit, {A, b}, [x]),
                      ex.construct(cvxpylayers_jax, fit, {A, b}, [x]))


def test_error_solver_failure_is_a_diffcp_solver_error():
    """cvxpylayers lets diffcp's SolverError through (eagerly); code catching it must
    catch ours."""
    x, lo, hi = cp.Variable(2), cp.Parameter(2), cp.Parameter(2)
    problem = cp.Problem(cp.Minimize(cp.sum(x)), [x >= lo, x <= hi])
    ours = CvxpyLayer(problem, parameters=[lo, hi], variables=[x])
    theirs = cvxpylayers_jax.CvxpyLayer(problem, parameters=[lo, hi], variables=[x])
    args = [jnp.ones(2), jnp.zeros(2)]
    assert isinstance(raised(lambda: theirs(*args)), DiffcpSolverError)
    assert isinstance(raised(lambda: ours(*args)), DiffcpSolverError)


# ----------------------------------------------------------- every cone: parity, check_grads


#: cones whose parity with cvxpylayers.jax runs by default (the others are marked slow:
#: each new cvxpylayers.jax layer costs seconds of tracing; test_compat_torch.py runs all)
JAX_PARITY_DEFAULT = ("lp", "soc", "exp_softmax", "pow", "psd_plain")


@pytest.mark.parametrize("name", [n if n in JAX_PARITY_DEFAULT else
                                  pytest.param(n, marks=pytest.mark.slow) for n in ex.CONES])
def test_parity_on_every_cone(name):
    # cvxpylayers' backward fails on power cones (diffcp 1.1.9's adjoint: "operands could
    # not be broadcast together"), so there only its values are compared
    check_parity(ex.CONES[name], seed=2, their_grad=name != "pow")


def check_grads_layer(build, seed=3, batch=None, symmetrise=False, modes=("fwd", "rev")):
    mine = build()
    layer = CvxpyLayer(mine.problem, parameters=mine.parameters, variables=mine.variables,
                       gp=mine.gp, solver_args=GRADCHECK_GP if mine.gp else GRADCHECK)
    symmetric = ex.symmetric_parameters(mine)

    def f(*params):
        if symmetrise:
            params = [sym(p, s) for p, s in zip(params, symmetric)]
        return layer(*params)

    check_grads(f, tuple(arrays(sample(build, seed, batch=batch))), order=1, modes=list(modes),
                eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(ex.CONES))
def test_check_grads_on_every_cone(name):
    check_grads_layer(ex.CONES[name])


@pytest.mark.parametrize("name", [pytest.param("lp", marks=pytest.mark.slow), "soc",
                                  pytest.param("exp_softmax", marks=pytest.mark.slow),
                                  "psd_plain"])
def test_check_grads_batched(name):
    check_grads_layer(ex.CONES[name], batch=2)


def test_check_grads_sdp_symmetric_parameter_symmetrised():
    check_grads_layer(ex.psd_projection, symmetrise=True)


def test_check_grads_sdp_symmetric_parameter_as_given():
    """check_grads steps along random (not symmetric) directions."""
    check_grads_layer(ex.psd_projection)


def test_check_grads_gp():
    check_grads_layer(ex.gp_coefficients)
    check_grads_layer(ex.readme_gp)  # (passes despite item 2: the map is consistent)
