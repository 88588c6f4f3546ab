"""Issue #17 item 16: compiled problems, both layers and solutions pickle and deep-copy,
and a restored copy gives the same values and derivatives as the original."""

import copy
import io
import pickle

import cvxpy as cp
import numpy as np
import pytest

import dpplayers

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional extra
    torch = None

#: Parameter points (two, so a value frozen at compile time cannot pass).
POINTS = [(np.array([1.0, -2.0, 0.3]), np.array([0.7, 0.2, -0.1])),
          (np.array([-0.4, 0.8, 1.5]), np.array([1.0, -0.3, 0.6]))]


def problem():
    """A QP with parameters in c and b, minimise ½‖x − p‖² + ½‖x‖² s.t. x ≤ u, with the
    multiplier as a second output (parameters unset, as a layer is built)."""
    p, u = cp.Parameter(3, name="p"), cp.Parameter(3, name="u")
    x = cp.Variable(3, name="x")
    con = x <= u
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - p) + 0.5 * cp.sum_squares(x)), [con])
    return prob, [p, u], [x, con.dual_variables[0]]


def closed_form(p, u):
    """From the KKT conditions 2x − p + λ = 0: x = min(p/2, u), λ = max(p − 2u, 0)."""
    x = np.minimum(p / 2, u)
    return x, np.maximum(p - 2 * u, 0.0)


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_compiled_problem_pickles_and_deep_copies(solver):
    prob, params, variables = problem()
    prog = dpplayers.compile(prob, params, variables, solver=solver)
    prog.solve(*POINTS[0])  # fill the caches and workspaces first
    for restored in (pickle.loads(pickle.dumps(prog)), copy.deepcopy(prog)):
        head = lambda program: program.describe().split("compiled in")[0]
        assert head(restored) == head(prog)
        for point in POINTS:
            # (a reused SCS workspace keeps its adaptive scale: agreement to solver rounding)
            a, b = prog.solve(*point), restored.solve(*point)
            for va, vb, want in zip(a.values, b.values, closed_form(*point)):
                np.testing.assert_allclose(vb, va, atol=1e-9)
                np.testing.assert_allclose(vb, want, atol=1e-6)
            w = [np.array([1.0, 2.0, -1.0]), np.array([0.3, 0.0, 1.0])]
            for ga, gb in zip(a.vjp(*w), b.vjp(*w)):
                np.testing.assert_allclose(gb, ga, atol=1e-9)


def test_solution_pickles_and_differentiates_after_loading():
    prob, params, variables = problem()
    prog = dpplayers.compile(prob, params, variables)
    for point in POINTS:
        sol = prog.solve(*point)
        w = [np.array([1.0, 2.0, -1.0]), np.array([0.3, 0.0, 1.0])]
        t = [np.array([0.2, -1.0, 0.5]), np.array([1.0, 1.0, -2.0])]
        before = sol.vjp(*w), sol.jvp(*t)  # factorisations now cached on sol
        loaded = pickle.loads(pickle.dumps(sol))
        for va, vb in zip(sol.values, loaded.values):
            np.testing.assert_array_equal(va, vb)
        after = loaded.vjp(*w), loaded.jvp(*t)
        for xs, ys in zip(before, after):
            for a, b in zip(xs, ys):
                np.testing.assert_allclose(b, a, atol=1e-12)
        # x = min(p/2, u): dx/dp = ½ where p/2 < u
        free = point[0] / 2 < point[1]
        np.testing.assert_allclose(after[1][0], np.where(free, t[0] / 2, t[1]), atol=1e-6)
        np.testing.assert_allclose(copy.deepcopy(sol).jvp(*t)[0], after[1][0], atol=1e-12)


if torch is not None:
    from dpplayers.torch import CvxpyLayer as TorchLayer

    class Head(torch.nn.Module):
        """A linear map into the layer's first parameter (module level: picklable)."""

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 3, dtype=torch.float64)
            self.layer = TorchLayer(*problem())

        def forward(self, z, u):
            return self.layer(self.linear(z), u)


def one_parameter_layer():
    """minimise ½‖x − p‖² + ½‖x‖² s.t. x ≤ 0.4: x = min(p/2, 0.4)."""
    p, x = cp.Parameter(3), cp.Variable(3)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - p) + 0.5 * cp.sum_squares(x)),
                      [x <= 0.4])
    return TorchLayer(prob, [p], [x])


def torch_outputs(model, z, u):
    z = z.clone().requires_grad_(True)
    u = u.clone().requires_grad_(True)
    x, lam = model(z, u)
    loss = (x * torch.tensor([1.0, -2.0, 0.5], dtype=x.dtype)).sum() + lam.sum()
    model.zero_grad()
    loss.backward()
    return [x.detach(), lam.detach(), z.grad, u.grad, model.linear.weight.grad.clone()]


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_torch_model_save_load_and_deepcopy():
    torch.manual_seed(0)
    model = Head()
    z = torch.tensor([[0.3, -1.0], [1.2, 0.4]], dtype=torch.float64)
    u = torch.tensor([0.2, 0.1, 0.4], dtype=torch.float64)
    expected = torch_outputs(model, z, u)  # after a call: caches are populated
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for restored in (loaded, copy.deepcopy(model)):
        for a, b in zip(expected, torch_outputs(restored, z, u)):
            assert torch.allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_torch_sequential_deepcopy_and_save():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3, dtype=torch.float64), one_parameter_layer())
    z = torch.tensor([[0.3, -1.0], [1.2, 0.4], [2.0, 2.0]], dtype=torch.float64)
    model(z)  # populate caches first
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [copy.deepcopy(model), torch.load(buffer, weights_only=False)]
    assert all(c[1].program is not model[1].program for c in copies)
    for zz in (z, -0.5 * z):
        zz = zz.clone().requires_grad_(True)
        (x,) = model(zz)
        p = model[0](zz)
        np.testing.assert_allclose(x.detach().numpy(), np.minimum(p.detach().numpy() / 2, 0.4),
                                   atol=1e-6)
        g_z, g_w = torch.autograd.grad(x.sum() ** 2, [zz, model[0].weight])
        for c in copies:
            zc = zz.detach().clone().requires_grad_(True)
            (xc,) = c(zc)
            gc_z, gc_w = torch.autograd.grad(xc.sum() ** 2, [zc, c[0].weight])
            for a, b in ((x, xc), (g_z, gc_z), (g_w, gc_w)):
                assert torch.allclose(a, b, atol=1e-9, rtol=0)


def test_jax_layer_pickles():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from dpplayers.jax import CvxpyLayer

    prob, params, variables = problem()
    layer = CvxpyLayer(prob, params, variables)

    def loss(lay, p, u):
        x, lam = lay(p, u)
        return jnp.sum(x * jnp.array([1.0, -2.0, 0.5])) + jnp.sum(lam)

    p, u = map(jnp.asarray, POINTS[0])
    loss(layer, p, u)
    loaded = pickle.loads(pickle.dumps(layer))
    for point in POINTS:
        p, u = map(jnp.asarray, point)
        for a, b in zip(layer(p, u), loaded(p, u)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-12)
        ga = jax.grad(lambda p, u: loss(layer, p, u), argnums=(0, 1))(p, u)
        gb = jax.grad(lambda p, u: loss(loaded, p, u), argnums=(0, 1))(p, u)
        gj = jax.jit(jax.grad(lambda p, u: loss(loaded, p, u), argnums=(0, 1)))(p, u)
        for a, b, c in zip(ga, gb, gj):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-12)
            np.testing.assert_allclose(np.asarray(c), np.asarray(a), atol=1e-12)
