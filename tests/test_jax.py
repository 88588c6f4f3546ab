"""dpplayers.jax.CvxpyLayer: derivatives on the zoo, JAX transformations, batching, dtypes,
errors, and parity with the NumPy core and with cvxpylayers.jax."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp
from helpers import CASES
from jax.test_util import check_grads

import dpplayers
from dpplayers.jax import CvxpyLayer

TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
# Finite differences need solutions accurate far below their step. Clarabel at TIGHT gives
# that on LPs and QPs, but on curved cones (second-order, PSD, exponential, power) its
# solution is only ~1e-5 accurate (exp_sum_exp: |x - log c| = 2e-5); SCS at eps 1e-11 is
# accurate to ~1e-10 there.
SCS_TIGHT = {"eps": 1e-11, "max_iters": 100_000}
DEFAULT_CASES = ("lp_simplex", "qp_box_projection", "socp_ball_linear", "sdp_psd_variable",
                 "exp_kl_div", "pow_power_1_5", "dual_soc", "gp_box_volume",
                 "qp_optnet")  # issue #6: quad_form(z, Q) with a PSD parameter Q


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def zoo():
    params = []
    for name, build in CASES.items():
        case = build()
        if case.smooth:
            marks = () if name in DEFAULT_CASES else (pytest.mark.slow,)
            params.append(pytest.param(name, marks=marks))
    return params


def make(case, **kwargs):
    kwargs.setdefault("solver_args", TIGHT)
    return CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp,
                      solver="CLARABEL", **kwargs)


def symmetrised(layer, case):
    """The layer on inputs made symmetric where the parameter must be (so that the
    finite-difference steps of check_grads stay valid)."""
    sym = [bool(p.attributes.get("symmetric") or p.attributes.get("PSD")) for p in case.parameters]

    def f(*args):
        return layer(*((a + jnp.swapaxes(a, -1, -2)) / 2 if s else a for a, s in zip(args, sym)))

    return f


def batch_of(case, rng, size):
    return [np.stack(v) for v in zip(*[case.sample(rng) for _ in range(size)])]


def close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(a - b).max(initial=0.0) <= tol * max(1.0, np.abs(b).max(initial=0.0))


# ------------------------------------------------------------- derivatives on the zoo


def test_every_family_has_a_default_case():
    assert {CASES[n]().family for n in DEFAULT_CASES} == {b().family for b in CASES.values()}


@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
@pytest.mark.parametrize("name", zoo())
def test_check_grads(name, batched):
    case = CASES[name]()
    rng = np.random.default_rng(0)
    values = batch_of(case, rng, 2) if batched else case.sample(rng)
    probe = CASES[name]()  # a fresh problem: the core can't compile a gp problem twice
    cones = dpplayers.compile(probe.problem, probe.parameters, probe.variables, gp=probe.gp).cones
    if cones.soc or cones.psd or cones.exp or cones.power:
        layer = CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp,
                           solver="SCS", solver_args=SCS_TIGHT)
    else:
        layer = make(case)
    check_grads(symmetrised(layer, case), [jnp.asarray(v) for v in values], order=1,
                modes=("fwd", "rev"), eps=1e-4, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["dual_equality_inequality", "gp_box_volume", "sdp_psd_variable"])
def test_derivatives_are_the_cores(name):
    """vjp, jvp, jacrev and jacfwd give exactly the core's vjp, jvp and jacobian."""
    case = CASES[name]()
    rng = np.random.default_rng(3)
    values = batch_of(case, rng, 3)
    layer = make(case)
    sol = layer.program.solve(*values, solver_args=TIGHT)
    outs, vjp = jax.vjp(layer, *values)
    for got, want in zip(outs, sol.values):
        close(got, want)
    cts = [rng.standard_normal(o.shape) for o in outs]
    for got, want in zip(vjp(tuple(cts)), sol.vjp(*cts)):
        close(got, want)
    tangents = [rng.standard_normal(np.shape(v)) for v in values]
    for got, want in zip(jax.jvp(layer, values, tangents)[1], sol.jvp(*tangents)):
        close(got, want)
    # full Jacobians of the first element, by both modes
    one = [v[0] for v in values]
    jac = layer.program.solve(*one, solver_args=TIGHT).jacobian()
    argnums = tuple(range(len(one)))
    for transform in (jax.jacrev, jax.jacfwd):
        got = jax.jit(transform(layer, argnums=argnums))(*one)
        for i in range(len(outs)):
            for j in range(len(one)):
                close(got[i][j], jac[i][j])


# ------------------------------------------------------------- transformations


def qp_layer(**kwargs):
    case = CASES["qp_nonneg_least_squares"]()
    return case, make(case, **kwargs)


def test_jit_vmap_grad_agree_with_batched_call():
    case, layer = qp_layer()
    F, g = batch_of(case, np.random.default_rng(1), 4)

    def loss(F, g):
        (x,) = layer(F, g)
        return jnp.sum((x - 0.1) ** 2)

    (x_ref,) = layer(F, g)
    grads = jax.grad(loss, argnums=(0, 1))(F, g)
    close(jax.jit(layer)(F, g)[0], x_ref)
    close(jax.vmap(layer)(F, g)[0], x_ref)
    close(jax.jit(jax.vmap(layer))(F, g)[0], x_ref)
    for transform in (jax.jit(jax.grad(loss, argnums=(0, 1))),
                      jax.vmap(jax.grad(loss, argnums=(0, 1))),
                      jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))):
        for got, want in zip(transform(F, g), grads):
            close(got, want)
    # per-element jvp under vmap equals the batched jvp
    dF, dg = np.ones_like(F), np.ones_like(g)
    batched_t = jax.jvp(layer, (F, g), (dF, dg))[1][0]
    close(jax.vmap(lambda *a: jax.jvp(layer, a[:2], a[2:])[1][0])(F, g, dF, dg), batched_t)
    close(jax.jit(lambda *a: jax.jvp(layer, a[:2], a[2:])[1][0])(F, g, dF, dg), batched_t)


def test_unbatched_parameter_broadcasts_and_gets_the_summed_gradient():
    case, layer = qp_layer()
    F, g = batch_of(case, np.random.default_rng(2), 3)
    F0 = F[0]
    (x,) = layer(F0, g)
    assert x.shape == (3, 4)
    gF = jax.grad(lambda F0: jnp.sum(layer(F0, g)[0] ** 2))(F0)
    sol = layer.program.solve(F0, g, solver_args=TIGHT)
    close(gF, sol.vjp(2 * sol.values[0])[0].sum(axis=0))
    dF = np.random.default_rng(9).standard_normal(F0.shape)
    close(jax.jvp(lambda F0: layer(F0, g)[0], (F0,), (dF,))[1],
          sol.jvp(dF, None)[0])
    # vmap over F only, g batched inside each call: a batch of batches
    (xx,) = jax.vmap(layer, in_axes=(0, None))(F, g)
    assert xx.shape == (3, 3, 4)
    close(xx[1], layer(F[1], g)[0])


@pytest.fixture
def count_solves(monkeypatch):
    calls = []
    solve = dpplayers.CompiledProblem.solve

    def counted(self, *values, **kwargs):
        sol = solve(self, *values, **kwargs)
        calls.append(sol.batch)
        return sol

    monkeypatch.setattr(dpplayers.CompiledProblem, "solve", counted)
    return calls


def test_vmap_makes_one_batched_solve(count_solves):
    """A vmapped call is one batched solve, and so is a vmapped gradient or Jacobian: the
    derivative callbacks find the forward pass's solution (and its factorisation) in the
    layer's RecentSolutions instead of solving again."""
    case, layer = qp_layer()
    F, g = batch_of(case, np.random.default_rng(4), 5)
    loss = lambda F, g: jnp.sum(layer(F, g)[0] ** 2)
    for shift, fn in enumerate((jax.vmap(layer), jax.jit(jax.vmap(layer)),
                                jax.vmap(jax.grad(loss)), jax.jit(jax.vmap(jax.grad(loss))),
                                jax.jacrev(layer), jax.jit(jax.jacrev(layer)),
                                jax.jit(jax.jacfwd(layer)))):
        count_solves.clear()
        jax.block_until_ready(fn(F, g + 1e-3 * shift))  # new values: no cached solution
        assert count_solves == [5], fn
    count_solves.clear()
    jax.block_until_ready(jax.vmap(jax.vmap(layer))(F.reshape(5, 1, 8, 4), g.reshape(5, 1, 8)))
    assert count_solves == [5]


def test_float32_in_float32_out():
    case, layer = qp_layer()
    F, g = batch_of(case, np.random.default_rng(5), 2)
    F64, g64 = jnp.asarray(F), jnp.asarray(g)
    (x64,) = layer(F64, g64)
    gF64 = jax.grad(lambda F: jnp.sum(layer(F, g64)[0]))(F64)
    assert x64.dtype == gF64.dtype == jnp.float64
    for x64_enabled in (True, False):
        with jax.enable_x64(x64_enabled):
            F32, g32 = jnp.asarray(F, jnp.float32), jnp.asarray(g, jnp.float32)
            (x32,) = layer(F32, g32)
            gF32 = jax.jit(jax.grad(lambda F, g32=g32: jnp.sum(layer(F, g32)[0])))(F32)
            assert x32.dtype == gF32.dtype == jnp.float32
            close(x32, x64, 1e-6)
            close(gF32, gF64, 1e-5)
    (x,) = layer(np.ones((8, 4), int), np.arange(8))  # integers: JAX's default float
    assert x.dtype == jnp.float64


def test_duals_gp_and_solver_args():
    case = CASES["dual_equality_inequality"]()
    values = case.sample(np.random.default_rng(6))
    layer = make(case, mode="dense")
    outs = layer(*values)
    assert [o.shape for o in outs] == [v.shape for v in case.variables]
    loss = lambda *a: sum(jnp.sum(jnp.sin(o)) for o in layer(*a))
    want = jax.grad(loss, argnums=(0, 3))(*values)
    for mode in ("direct", "lsqr", "lsmr"):
        args = {"mode": mode}
        got = jax.jit(jax.grad(lambda *a, args=args: sum(jnp.sum(jnp.sin(o)) for o in layer(
            *a, solver_args=args)), argnums=(0, 3)))(*values)
        for a, b in zip(got, want):
            close(a, b, 1e-7)
    gp = CASES["gp_box_volume"]()
    gp_layer = make(gp)
    x, y, z = gp_layer(*gp.sample(np.random.default_rng(7)))
    assert x > 0 and y > 0 and z > 0


def test_second_derivatives_raise():
    case = CASES["exp_sum_exp"]()
    layer = make(case)
    c = jnp.asarray(case.sample(np.random.default_rng(10))[0])
    f = lambda c: jnp.sum(layer(c)[0])
    for second in (jax.hessian(f), jax.grad(lambda c: jnp.sum(jax.grad(f)(c)))):
        with pytest.raises(dpplayers.DerivativeError, match="differentiable once"):
            second(c)


# ------------------------------------------------------------- errors


@pytest.mark.parametrize("args, match", [
    (((8, 4), (7,)),
     # (issue #17 item 18: unnamed parameters are named by position and shape)
     r"parameter #1 \(shape \(8,\)\) expects shape \(8,\) \(or \(batch, \*\(8,\)\)\), "
     r"got shape \(7,\)"),
    (((2, 8, 4), (3, 8)),
     r"Inconsistent batch sizes: parameter #1 .* has batch size 3 but parameter #0 .* has 2"),
    (((8, 4),), r"expected 2 parameter values"),
])
def test_shape_errors_at_trace_time(args, match):
    _, layer = qp_layer()
    values = [jnp.ones(s) for s in args]
    with pytest.raises(dpplayers.ParameterError, match=match):
        layer(*values)
    with pytest.raises(dpplayers.ParameterError, match=match):
        jax.jit(layer)(*values)


def box():
    lo, hi = cp.Parameter(2), cp.Parameter(2)
    x = cp.Variable(2)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x)), [x >= lo, x <= hi])
    return CvxpyLayer(problem, [lo, hi], [x], solver="CLARABEL", solver_args=TIGHT)


def test_errors_outside_jit_keep_their_type():
    layer = box()
    lo, hi = np.array([[0.0, 0.0], [2.0, 0.0]]), np.ones((2, 2))
    with pytest.raises(dpplayers.SolverError, match="batch element 1"):
        layer(lo, hi)
    with pytest.raises(dpplayers.SolverError, match="batch element 1"):
        jax.grad(lambda lo: jnp.sum(layer(lo, hi)[0]))(lo)
    with pytest.raises(dpplayers.ParameterError, match=r"parameter #0 \(shape \(2,\)\) has NaN"):
        layer(np.array([np.nan, 0.0]), np.ones(2))
    with pytest.raises(ValueError, match="on_failure must be"):
        layer(lo, hi, on_failure="ignore")


def test_failures_under_jit():
    layer = box()
    lo, hi = np.array([[0.5, -1.0], [2.0, 0.0]]), np.ones((2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (x,) = jax.jit(lambda lo, hi: layer(lo, hi, on_failure="nan"))(lo, hi)
        g = jax.jit(jax.grad(lambda lo: jnp.sum(layer(lo, hi, on_failure="nan")[0])))(lo)
    close(x[0], [0.5, 0.0], 1e-7)
    assert np.isnan(x[1]).all()
    close(g[0], [1.0, 0.0], 1e-6)
    assert np.isnan(g[1]).all()
    with pytest.raises(jax.errors.JaxRuntimeError, match="SolverError.*batch element 1"):
        jax.block_until_ready(jax.jit(layer)(lo, hi))


# ------------------------------------------------------------- parity with cvxpylayers


@pytest.mark.parametrize("name", ["qp_nonneg_least_squares", "dual_soc", "exp_kl_div"])
def test_parity_with_cvxpylayers(name):
    ref_module = pytest.importorskip("cvxpylayers.jax")
    case = CASES[name]()
    values = batch_of(case, np.random.default_rng(8), 2)
    ref = ref_module.CvxpyLayer(case.problem, list(case.parameters), list(case.variables),
                                gp=case.gp)

    def ref_call(*args):  # cvxpylayers' default: diffcp with SCS
        return ref(*args, solver_args={"eps": 1e-10, "max_iters": 100_000})

    def loss(fn):
        return lambda *args: sum(jnp.sum(jnp.cos(o)) for o in fn(*args))

    layer = make(case)
    argnums = tuple(range(len(values)))
    for got, want in zip(layer(*values), ref_call(*values)):
        close(got, want, 1e-5)
    got = jax.jit(jax.grad(loss(layer), argnums=argnums))(*values)
    for a, b in zip(got, jax.grad(loss(ref_call), argnums=argnums)(*values)):
        close(a, b, 1e-5)


def test_eager_calls_of_one_configuration_share_their_callbacks():
    """Each call configuration gets one host and one custom_jvp function, reused by every
    later call (eager JAX then finds its dispatches compiled), and its own for new settings;
    the values do not depend on it."""
    x, y = cp.Variable(3), cp.Parameter(3)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [x >= 0]), [y], [x])
    grad = jax.grad(lambda v: jnp.sum(layer(v)[0] ** 2))
    first = grad(jnp.array([1.0, -2.0, 0.5]))
    second = grad(jnp.array([-1.0, 2.0, 3.0]))
    assert len(layer._hosts) == 1
    np.testing.assert_allclose(first, [2.0, 0.0, 1.0], atol=1e-6)  # 2 max(y, 0)
    np.testing.assert_allclose(second, [0.0, 4.0, 6.0], atol=1e-6)
    layer(jnp.ones(3), solver_args={"eps": 1e-10})
    assert len(layer._hosts) == 2
