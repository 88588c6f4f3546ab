"""dpplayers.torch.CvxpyLayer: autograd (reverse and forward), torch.func, parity with
cvxpylayers, training, dtype/device and error paths. Driven by the zoo in helpers.py."""

import warnings

import cvxpy as cp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import CASES, names

import dpplayers
from dpplayers.torch import CvxpyLayer

#: Settings accurate enough (~1e-10) for central differences with step 1e-6. Clarabel's
#: interior point is that accurate on LPs and QPs; on SOC, PSD, exponential and power cones
#: it stops at 1e-7…1e-5 even at tol_* = 1e-12 (often "AlmostSolved", and tol_ktratio must
#: be tightened too), which finite differences amplify to O(1e-1); SCS at eps 1e-12 is not.
CLARABEL_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12,
                  "tol_ktratio": 1e-12}
SCS_TIGHT = {"eps": 1e-12, "max_iters": 200_000}


def tight(case):
    """(solver, solver_args) for derivative checks on ``case``."""
    return ("CLARABEL", CLARABEL_TIGHT) if case.family in ("lp", "qp") else ("SCS", SCS_TIGHT)


SMOOTH = names(smooth_only=True)
FAMILIES = sorted({CASES[n]().family for n in SMOOTH})
#: one smooth case per family in the default run; every smooth case under `slow`
REPRESENTATIVE = [next(n for n in SMOOTH if CASES[n]().family == f) for f in FAMILIES]
REPRESENTATIVE.append("qp_optnet")  # issue #6: quad_form(z, Q) with a PSD parameter Q
EXHAUSTIVE = [n for n in SMOOTH if n not in REPRESENTATIVE]


def layer_for(case, **kwargs):
    """A layer with accurate solver settings as constructor defaults."""
    solver, args = tight(case)
    return CvxpyLayer(case.problem, list(case.parameters), list(case.variables), gp=case.gp,
                      solver=solver, solver_args=args, **kwargs)


def is_symmetric(spec):
    return spec.symmetric or spec.psd or spec.nsd


def function_of(layer, specs, solver_args=None):
    """The layer as a function of unconstrained tensors: symmetric parameters are
    symmetrised first, so finite differences may perturb one entry at a time."""
    sym = [is_symmetric(s) for s in specs]

    def f(*tensors):
        tensors = [(t + t.mT) / 2 if s else t for t, s in zip(tensors, sym)]
        return layer(*tensors, solver_args=solver_args)

    return f


def inputs(case, seed=0, batch=None, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    samples = [case.sample(rng) for _ in range(batch or 1)]
    values = [np.stack(v) if batch else v[0] for v in zip(*samples)]
    return [torch.tensor(v, dtype=dtype, requires_grad=True) for v in values]


def weighted(outputs, seed=1):
    """A scalar loss ⟨w, outputs⟩ with fixed weights (not random: it runs under vmap)."""
    return sum((o * torch.linspace(-1, 1 + seed, o.numel(), dtype=o.dtype).reshape(o.shape)).sum()
               for o in outputs)


def grad(f, params, seed=1):
    return torch.autograd.grad(weighted(f(*params), seed), params, allow_unused=True)


def sym_part(g, spec):
    return (g + g.mT) / 2 if is_symmetric(spec) else g


# ------------------------------------------------------------------------------ gradcheck


def check_gradients(name, batched):
    case = CASES[name]()
    layer = layer_for(case)
    f = function_of(layer, layer.program.layout.specs)
    params = inputs(case, seed=3, batch=2 if batched else None)
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5, rtol=1e-4,
                                    check_forward_ad=True)


@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_gradcheck(name, batched):
    check_gradients(name, batched)


@pytest.mark.slow
@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
@pytest.mark.parametrize("name", EXHAUSTIVE)
def test_gradcheck_exhaustive(name, batched):
    check_gradients(name, batched)


def test_representatives_cover_every_family():
    assert set(FAMILIES) >= {"lp", "qp", "socp", "sdp", "exp", "pow", "dual", "gp"}


# ------------------------------------------------------------------------- parity


def directional_fd(f, params, direction, h=1e-6):
    """Central difference of ⟨w, f⟩ along ``direction``."""
    with torch.no_grad():
        plus = weighted(f(*(p + h * d for p, d in zip(params, direction))))
        minus = weighted(f(*(p - h * d for p, d in zip(params, direction))))
    return float((plus - minus) / (2 * h))


def check_parity(name):
    ref_mod = pytest.importorskip("cvxpylayers.torch")
    case, twin = CASES[name](), CASES[name]()  # separate cvxpy problems, same structure
    ours = layer_for(case)
    theirs = ref_mod.CvxpyLayer(twin.problem, list(twin.parameters), list(twin.variables),
                                gp=twin.gp)
    specs = ours.program.layout.specs
    params = inputs(case, seed=5)
    f = function_of(ours, specs)
    g = function_of(theirs, specs, {"eps": 1e-10, "max_iters": 100_000})
    for a, b in zip(f(*params), g(*params)):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a, b)
    g_ours = [sym_part(x, s) for x, s in zip(grad(f, params), specs)]
    g_theirs = [sym_part(x, s) for x, s in zip(grad(g, params), specs)]
    gen = torch.Generator().manual_seed(7)
    direction = [sym_part(torch.randn(p.shape, generator=gen, dtype=p.dtype), s)
                 for p, s in zip(params, specs)]
    fd = directional_fd(f, params, direction)
    dot = lambda gs: float(sum((x * d).sum() for x, d in zip(gs, direction)))
    err_ours, err_theirs = abs(dot(g_ours) - fd), abs(dot(g_theirs) - fd)
    scale = max(1.0, abs(fd))
    assert err_ours <= 1e-5 * scale, (err_ours, err_theirs)
    agree = all(torch.allclose(a, b, atol=1e-4, rtol=1e-3) for a, b in zip(g_ours, g_theirs))
    # where the two differ beyond solver tolerance, ours must be the one finite differences back
    assert agree or err_ours < err_theirs, (name, err_ours, err_theirs)


@pytest.mark.parametrize("name", [n for n in REPRESENTATIVE if n != "qp_optnet"])
def test_parity_with_cvxpylayers(name):
    """(cvxpylayers' default diffcp path cannot take quad_form(z, Q) with a parameter Q.)"""
    check_parity(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXHAUSTIVE)
def test_parity_with_cvxpylayers_exhaustive(name):
    check_parity(name)


def test_symmetric_parameter_gradient_is_the_symmetric_representative():
    """For a symmetric parameter only ⟨g, S⟩ over symmetric S is defined. cvxpylayers may
    return any representative; ours is the symmetric one, and both match finite
    differences along symmetric directions."""
    ref_mod = pytest.importorskip("cvxpylayers.torch")
    case, twin = CASES["sdp_psd_variable"](), CASES["sdp_psd_variable"]()
    (C,) = inputs(case, seed=2)
    ours = layer_for(case)
    theirs = ref_mod.CvxpyLayer(twin.problem, list(twin.parameters), list(twin.variables))
    (g_ours,) = grad(ours, [C])
    (g_theirs,) = grad(lambda c: theirs(c, solver_args={"eps": 1e-10}), [C])
    assert torch.allclose(g_ours, g_ours.T, atol=1e-12)
    assert not torch.allclose(g_theirs, g_theirs.T, atol=1e-6)  # differ entrywise...
    S = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=C.dtype)
    S = (S + S.T) / 2
    fd = directional_fd(ours, [C], [S])  # ...but not along symmetric directions
    assert abs(float((g_ours * S).sum()) - fd) < 1e-6 * max(1, abs(fd))
    assert abs(float((g_theirs * S).sum()) - fd) < 1e-4 * max(1, abs(fd))


# ------------------------------------------------------------------------ torch.func


def test_jacrev_jacfwd_match_core_jacobian():
    case = CASES["dual_equality_inequality"]()
    layer = layer_for(case)
    params = [p.detach() for p in inputs(case, seed=4)]
    f = layer
    argnums = tuple(range(len(params)))
    rev = torch.func.jacrev(f, argnums=argnums)(*params)
    fwd = torch.func.jacfwd(f, argnums=argnums)(*params)
    core = layer.program.solve(*(p.numpy() for p in params), solver_args=layer.solver_args).jacobian()
    for rev_i, fwd_i, core_i in zip(rev, fwd, core):
        for r, w, c in zip(rev_i, fwd_i, core_i):
            assert r.shape == w.shape == c.shape
            assert torch.allclose(r, w, atol=1e-9)
            np.testing.assert_allclose(r.numpy(), c, atol=1e-9)


def test_jacrev_batched_is_block_diagonal():
    case = CASES["socp_norm_residual"]()
    layer = layer_for(case)
    A, b = [p.detach() for p in inputs(case, seed=1, batch=3)]
    f = lambda a: layer(a, b[0])[0]
    rev, fwd = torch.func.jacrev(f)(A), torch.func.jacfwd(f)(A)  # (3, 3, 3, 6, 3)
    assert torch.allclose(rev, fwd, atol=1e-9)
    core = layer.program.solve(A.numpy(), b[0].numpy(), solver_args=layer.solver_args).jacobian()[0][0]
    for k in range(3):
        np.testing.assert_allclose(rev[k, :, k].numpy(), core[k], atol=1e-9)
        assert rev[k, :, (k + 1) % 3].abs().max() == 0


class CountingProgram:
    """Wraps a CompiledProblem and counts solves and their batch sizes."""

    def __init__(self, program):
        self.program, self.batches = program, []

    def solve(self, *values, **kwargs):
        sol = self.program.solve(*values, **kwargs)
        self.batches.append(sol.batch)
        return sol

    def __getattr__(self, name):
        return getattr(self.program, name)


def test_vmap_grad_is_one_batched_solve():
    case = CASES["exp_log_sum_exp"]()
    layer = layer_for(case)
    A, b = inputs(case, seed=2, batch=4)
    counter = layer.program = CountingProgram(layer.program)
    loss = lambda a, bb: weighted(layer(a, bb))
    per_sample = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(0, None))
    gA, gb = per_sample(A.detach(), b[0].detach())
    assert counter.batches == [4]
    for k in range(4):
        rA, rb = torch.autograd.grad(loss(A[k], b[0]), (A, b))
        assert torch.allclose(gA[k], rA[k], atol=1e-9) and torch.allclose(gb[k], rb[0], atol=1e-9)


def test_vmap_over_batched_calls_and_vmap_of_jacrev():
    case = CASES["qp_nonneg_least_squares"]()
    layer = layer_for(case)
    F, g = [p.detach() for p in inputs(case, seed=6, batch=6)]
    F, g = F.reshape(2, 3, *F.shape[1:]), g[:3]
    f = lambda a, bb: layer(a, bb)[0]
    out = torch.func.vmap(f, in_dims=(0, None))(F, g)  # each sample is a batch of 3
    assert out.shape == (2, 3, 4)
    assert torch.allclose(out[1], f(F[1], g), atol=1e-9)
    jac = torch.func.vmap(torch.func.jacrev(f, argnums=1), in_dims=(0, None))(F[:, 0], g[0])
    assert torch.allclose(jac[1], torch.func.jacrev(f, argnums=1)(F[1, 0], g[0]), atol=1e-9)


def test_forward_mode_autograd_and_func_jvp():
    case = CASES["pow_pnorm3"]()
    layer = layer_for(case)
    A, b = [p.detach() for p in inputs(case, seed=8)]
    tA = torch.randn(A.shape, generator=torch.Generator().manual_seed(0), dtype=A.dtype)
    jac = layer.program.solve(A.numpy(), b.numpy(), solver_args=layer.solver_args).jacobian()[0][0]
    want = np.tensordot(jac, tA.numpy(), axes=2)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        (x,) = layer(fwAD.make_dual(A, tA), b)
        np.testing.assert_allclose(fwAD.unpack_dual(x).tangent.numpy(), want, atol=1e-9)
    _, (tx,) = torch.func.jvp(lambda a: layer(a, b), (A,), (tA,))
    np.testing.assert_allclose(tx.numpy(), want, atol=1e-9)


def test_second_derivatives_are_refused():
    case = CASES["qp_box_projection"]()
    layer = layer_for(case)
    (y,) = [p.detach() for p in inputs(case)]
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        torch.func.hessian(lambda t: layer(t)[0].pow(2).sum())(y)


# ------------------------------------------------------------------------- training


def test_training_reduces_loss_tenfold():
    """Learn the linear map feeding a projection onto the unit ball from its outputs."""
    n, steps = 3, 200
    z, x = cp.Parameter(n), cp.Variable(n)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.norm(x, 2) <= 1]),
                       [z], [x])
    gen = torch.Generator().manual_seed(0)
    W_true = torch.randn(n, n, generator=gen, dtype=torch.float64)
    Y = torch.randn(64, n, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        (targets,) = layer(Y @ W_true.T)
    model = torch.nn.Linear(n, n, bias=False, dtype=torch.float64)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for step in range(steps):
        idx = torch.arange(8) + 8 * (step % 8)
        (pred,) = layer(model(Y[idx]))
        loss = (pred - targets[idx]).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last * 10 <= first, (first, last)


# --------------------------------------------------------------------- dtype, device


def box_layer(**kwargs):
    """min ‖x − y‖² s.t. lo ≤ x ≤ hi: infeasible for elements with lo > hi."""
    y, lo, hi = cp.Parameter(3, name="y"), cp.Parameter(3, name="lo"), cp.Parameter(3, name="hi")
    x = cp.Variable(3, name="x")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [x >= lo, x <= hi])
    return CvxpyLayer(prob, [y, lo, hi], [x], **kwargs), (y, lo, hi, x, prob)


def test_float32_in_float32_out():
    layer, _ = box_layer()
    y = torch.tensor([[2.0, 0.5, -3.0]], dtype=torch.float32, requires_grad=True)
    lo, hi = -torch.ones(3, dtype=torch.float32), torch.ones(3, dtype=torch.float32)
    (x,) = layer(y, lo, hi)
    assert x.dtype == torch.float32 and x.shape == (1, 3)
    assert torch.allclose(x, torch.tensor([[1.0, 0.5, -1.0]]), atol=1e-4)
    x.sum().backward()
    assert y.grad.dtype == torch.float32
    assert torch.allclose(y.grad, torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-3)


def test_gradients_are_none_safe():
    layer, _ = box_layer()
    y = torch.tensor([2.0, 0.5, -3.0], dtype=torch.float64, requires_grad=True)
    lo = -torch.ones(3, dtype=torch.float64)
    hi = torch.full((4, 3), 1.5, dtype=torch.float64, requires_grad=True)  # batched
    (x,) = layer(y, lo, hi)
    x.sum().backward()
    assert lo.grad is None
    assert y.grad.shape == (3,) and hi.grad.shape == (4, 3)
    assert torch.allclose(y.grad, torch.tensor([0.0, 4.0, 0.0], dtype=torch.float64), atol=1e-4)
    assert torch.allclose(hi.grad[:, 0], torch.ones(4, dtype=torch.float64), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_round_trip():
    layer, _ = box_layer()
    y = torch.tensor([2.0, 0.5, -3.0], device="cuda", requires_grad=True)
    lo, hi = -torch.ones(3, device="cuda"), torch.ones(3, device="cuda")
    (x,) = layer(y, lo, hi)
    assert x.device.type == "cuda" and x.dtype == torch.float32
    x.sum().backward()
    assert y.grad.device.type == "cuda"
    assert torch.allclose(y.grad.cpu(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-3)
    _, (tx,) = torch.func.jvp(lambda t: layer(t, lo, hi), (y.detach(),), (torch.ones_like(y),))
    assert tx.device.type == "cuda"


def test_gp_layer_matches_cvxpy():
    case = CASES["gp_box_volume"]()
    layer = layer_for(case)
    a, b = inputs(case, seed=0)
    out = layer(a, b)
    case.parameters[0].value, case.parameters[1].value = a.item(), b.item()
    case.problem.solve(gp=True, solver=cp.CLARABEL)
    for o, v in zip(out, case.variables):
        assert abs(o.item() - v.value) < 1e-6 * max(1.0, abs(v.value))


# ----------------------------------------------------------------------------- errors


def test_wrong_number_of_tensors():
    layer, _ = box_layer()
    with pytest.raises(dpplayers.ParameterError, match=r"expected 3 parameter values \(y, lo, hi\), got 2"):
        layer(torch.zeros(3), torch.zeros(3))


def test_wrong_shape_names_the_parameter():
    layer, _ = box_layer()
    with pytest.raises(dpplayers.ParameterError, match=r"parameter 'hi' expects shape \(3,\).*got shape \(4,\)"):
        layer(torch.zeros(3), -torch.ones(3), torch.ones(4))


def test_constructor_names_unknown_variable_and_missing_parameter():
    _, (y, lo, hi, x, prob) = box_layer()
    stranger = cp.Variable(2, name="stranger")
    with pytest.raises(ValueError, match="stranger"):
        CvxpyLayer(prob, [y, lo, hi], [x, stranger])
    with pytest.raises(ValueError, match="missing.*hi"):
        CvxpyLayer(prob, [y, lo], [x])


def test_solver_failure_raises_solver_error():
    layer, _ = box_layer(solver="CLARABEL")
    y, lo = torch.zeros(2, 3), -torch.ones(2, 3)
    hi = torch.stack([torch.ones(3), -2 * torch.ones(3)])  # element 1 is infeasible
    with pytest.raises(dpplayers.SolverError, match="batch element 1.*status"):
        layer(y, lo, hi)


@pytest.mark.parametrize("where", ["call", "constructor"])
def test_nan_option_returns_nan_for_failed_elements(where):
    layer, _ = box_layer(solver="CLARABEL", **({"on_failure": "nan"} if where == "constructor" else {}))
    args = {"on_failure": "nan"} if where == "call" else {}
    y = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    lo = -torch.ones(2, 3, dtype=torch.float64)
    hi = torch.stack([torch.ones(3), -2 * torch.ones(3)]).double()
    with pytest.warns(RuntimeWarning, match=r"1 of 2 batch elements failed \(\[1\]\)"):
        (x,) = layer(y, lo, hi, solver_args=args)
    assert torch.isfinite(x[0]).all() and torch.isnan(x[1]).all()
    x[0].sum().backward()
    assert torch.isfinite(y.grad[0]).all()


def test_solver_args_reach_the_core_and_call_overrides_constructor():
    # an iteration limit warns and keeps its point unless inaccurate="fail" (issue #17)
    layer, _ = box_layer(solver="CLARABEL", solver_args={"max_iter": 1, "inaccurate": "fail"})
    y, lo, hi = torch.tensor([2.0, 0.5, -3.0]), -torch.ones(3), torch.ones(3)
    with pytest.raises(dpplayers.SolverError, match="status"):
        layer(y, lo, hi)
    y.requires_grad_(True)
    (x,) = layer(y, lo, hi, solver_args={"max_iter": 100})
    assert torch.allclose(x, torch.tensor([1.0, 0.5, -1.0]), atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        layer(y, lo, hi, solver_args={"max_iter": 100, "mode": "bogus"})
    grads = [torch.autograd.grad(layer(y, lo, hi, solver_args={"max_iter": 100, "mode": m})[0]
                                 @ torch.tensor([1.0, 2.0, 3.0]), y)[0] for m in ("direct", "lsqr")]
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_no_warning_on_success():
    layer, _ = box_layer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.zeros(3), -torch.ones(3), torch.ones(3))


def test_gradients_from_strided_arrays_keep_their_values():
    """Gradients pulled back as views (a transpose; a reversed view, which torch cannot
    share) come back as tensors with the same values, in the parameters' dtype."""
    from dpplayers.torch import _tensor

    a = np.arange(12.0).reshape(3, 4)
    like = [torch.zeros(4, 3, dtype=torch.float64)]
    for view in (a.T, a[:, ::-1], a[::2]):
        t = _tensor(view, like)
        assert t.dtype == torch.float64
        np.testing.assert_array_equal(t.numpy(), view)
    assert _tensor(a.T, [torch.zeros(1, dtype=torch.float32)]).dtype == torch.float32


def test_large_batched_gradients_are_exact_and_c_ordered():
    """Gradients of a batch of matrices larger than _sparse.CACHE_BYTES come back from θ by
    tiles, C-ordered as their parameters (torch then accumulates them without a copy):
    against the closed form of least squares."""
    from test_forward import least_squares_gradients, least_squares_layer_problem
    problem, params, outputs = least_squares_layer_problem()
    layer = CvxpyLayer(problem, parameters=params, variables=outputs, solver="CLARABEL")
    rng = np.random.default_rng(3)
    F, g, c = rng.standard_normal((8, 120, 80)), rng.standard_normal((8, 120)), \
        rng.standard_normal((8, 80))
    x, dF, dg = least_squares_gradients(F, g, c)
    Ft, gt = (torch.tensor(v, requires_grad=True) for v in (F, g))
    (xt,) = layer(Ft, gt)
    np.testing.assert_allclose(xt.detach().numpy(), x, atol=1e-7)
    (xt * torch.tensor(c)).sum().backward()
    assert Ft.grad.is_contiguous()
    np.testing.assert_allclose(Ft.grad.numpy(), dF, atol=1e-6)
    np.testing.assert_allclose(gt.grad.numpy(), dg, atol=1e-6)
