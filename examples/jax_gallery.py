# %% [markdown]
# # The gallery in JAX, under `jax.jit`
#
# `dpplayers.jax.CvxpyLayer` is a JAX function of its parameters: it composes with `jax.jit`,
# `jax.grad` and `jax.vmap` (a vmapped call is one batched solve). This notebook repeats
# three of the gallery's applications with every call inside `jax.jit`:
#
# 1. standard operations as argmin layers (ReLU, softmax, sparsemax): values and gradients
#    equal the closed forms to 1e-6 (see `argmin_operations.py` for the PyTorch version);
# 2. declarative nodes: least squares and the projection onto a ball, against their closed
#    forms, with the gradient taken by `jax.grad` of a jitted loss (`declarative_nodes.py`);
# 3. TV denoising with learned weights, trained by a jitted gradient step
#    (`tv_denoising.py`): it must beat plain TV at its best weight.
#
# Speed: the TV layer's gradient under `jax.jit` is 5.9× faster with dpplayers than cvxpylayers'
# JAX layer's (which `jax.jit` cannot trace, so it runs eagerly) at a batch of 32 (SCS at 1e-8,
# medians; measured by `benchmarks/gallery.py`, figures in `benchmarks/README.md`).
#
# Run as a script: `python examples/jax_gallery.py` (`QUICK=1` for fewer training steps).

# %%
import os

import cvxpy as cp
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from dpplayers.jax import CvxpyLayer

jax.config.update("jax_enable_x64", True)
QUICK = os.environ.get("QUICK") == "1"
rng = np.random.default_rng(0)
ARGS = {"refine": 2}

# %% [markdown]
# ## 1. Standard operations
#
# The same problems as in PyTorch; `jax.jit` wraps the layer call and `jax.vjp` the jitted
# function. Sparsemax's closed form is max(x − τ, 0) with τ from the sorted input.

# %%
n, batch = 5, 8
x, y = cp.Parameter(n), cp.Variable(n)
ops = {
    "relu": (cp.Problem(cp.Minimize(0.5 * cp.sum_squares(y - x)), [y >= 0]), jax.nn.relu),
    "softmax": (cp.Problem(cp.Minimize(-x @ y - cp.sum(cp.entr(y))), [cp.sum(y) == 1]),
                jax.nn.softmax),
}


def sparsemax(v: jax.Array) -> jax.Array:
    """Projection of each row onto the probability simplex."""
    s = -jnp.sort(-v, axis=-1)
    k = jnp.arange(1, v.shape[-1] + 1)
    size = jnp.sum(1 + k * s > jnp.cumsum(s, axis=-1), axis=-1, keepdims=True)
    tau = (jnp.take_along_axis(jnp.cumsum(s, axis=-1), size - 1, axis=-1) - 1) / size
    return jnp.maximum(v - tau, 0)


ops["sparsemax"] = (cp.Problem(cp.Minimize(cp.sum_squares(y - x)), [cp.sum(y) == 1, y >= 0]),
                    sparsemax)

X = jnp.asarray(2 * rng.standard_normal((batch, n)))
W = jnp.asarray(rng.standard_normal((batch, n)))
op_errors = {}
for name, (problem, closed_form) in ops.items():
    layer = CvxpyLayer(problem, parameters=[x], variables=[y], solver="CLARABEL")
    f = jax.jit(lambda v, layer=layer: layer(v, solver_args=ARGS)[0])
    out, pullback = jax.vjp(f, X)
    ref, ref_pullback = jax.vjp(closed_form, X)
    op_errors[name] = (float(jnp.abs(out - ref).max()),
                       float(jnp.abs(pullback(W)[0] - ref_pullback(W)[0]).max()))
    print(f"{name:10s} max |value error| {op_errors[name][0]:.1e}   "
          f"max |gradient error| {op_errors[name][1]:.1e}")

# %%
for name, (value_error, gradient_error) in op_errors.items():
    assert value_error < 1e-6 and gradient_error < 1e-6, (name, value_error, gradient_error)

# %% [markdown]
# ## 2. Declarative nodes
#
# Least squares x* = argmin ‖Ax − b‖² (closed form: `jnp.linalg.lstsq`) and the projection onto
# the ball of radius r (closed form z / max(1, ‖z‖/r)); the loss is a random linear
# functional of the output, differentiated by `jax.grad` of the jitted loss.

# %%
A, b, xs = cp.Parameter((6, 3)), cp.Parameter(6), cp.Variable(3)
least_squares = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(A @ xs - b))),
                           parameters=[A, b], variables=[xs])
z, r = cp.Parameter(4), cp.Parameter(nonneg=True)
ball = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(y[:4] - z)), [cp.norm(y[:4]) <= r]),
                  parameters=[z, r], variables=[y])

A0, b0 = jnp.asarray(rng.standard_normal((6, 3))), jnp.asarray(rng.standard_normal(6))
z0, r0 = jnp.asarray(2 * rng.standard_normal(4)), jnp.asarray(1.2)
c3, c4 = jnp.asarray(rng.standard_normal(3)), jnp.asarray(rng.standard_normal(4))


def ls_loss(A: jax.Array, b: jax.Array) -> jax.Array:
    """A linear functional of the layer's least-squares solution."""
    return least_squares(A, b, solver_args=ARGS)[0] @ c3


def ls_closed(A: jax.Array, b: jax.Array) -> jax.Array:
    """The same functional of lstsq's solution."""
    return jnp.linalg.lstsq(A, b)[0] @ c3


def ball_loss(z: jax.Array, r: jax.Array) -> jax.Array:
    """A linear functional of the layer's projection onto the ball."""
    return ball(z, r, solver_args=ARGS)[0][:4] @ c4


def ball_closed(z: jax.Array, r: jax.Array) -> jax.Array:
    """The same functional of the closed-form projection."""
    return z / jnp.maximum(1.0, jnp.linalg.norm(z) / r) @ c4


node_errors = {}
for name, ours, closed, args in (("least squares", ls_loss, ls_closed, (A0, b0)),
                                 ("ball", ball_loss, ball_closed, (z0, r0))):
    value, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(*args)
    ref_value, ref_grads = jax.value_and_grad(closed, argnums=(0, 1))(*args)
    node_errors[name] = (float(abs(value - ref_value)),
                         max(float(jnp.abs(g - h).max()) for g, h in zip(grads, ref_grads)))
    print(f"{name:14s} |value error| {node_errors[name][0]:.1e}   "
          f"max |gradient error| {node_errors[name][1]:.1e}")

# %%
for name, (value_error, gradient_error) in node_errors.items():
    assert value_error < 1e-6 and gradient_error < 1e-6, (name, value_error, gradient_error)

# %% [markdown]
# ## 3. TV denoising with learned weights
#
# Piecewise-constant signals of length 40 that jump only at multiples of 8, noise σ = 0.3.
# The layer x*(y, w) = argmin ½‖x − y‖² + Σᵢ wᵢ|x_{i+1} − xᵢ|; each training step (a batched
# solve, its vjp and an Adam update written in jnp) is one jitted function.

# %%
N, period = 40, 8
steps = 40 if QUICK else 200


def signals(count: int) -> tuple[jax.Array, jax.Array]:
    """Clean signals and noisy copies."""
    clean = np.repeat(rng.standard_normal((count, N // period)), period, axis=1)
    return jnp.asarray(clean), jnp.asarray(clean + 0.3 * rng.standard_normal(clean.shape))


train_clean, train_noisy = signals(200)
test_clean, test_noisy = signals(100)
sig, w = cp.Parameter(N), cp.Parameter(N - 1, nonneg=True)
xt = cp.Variable(N)
tv = CvxpyLayer(cp.Problem(cp.Minimize(0.5 * cp.sum_squares(xt - sig)
                                       + w @ cp.abs(cp.diff(xt)))),
                parameters=[sig, w], variables=[xt])


def mse(weights: jax.Array, noisy: jax.Array, clean: jax.Array) -> jax.Array:
    """Mean squared error of the denoised signals."""
    return jnp.mean((tv(noisy, weights)[0] - clean) ** 2)


grid = np.logspace(-1.5, 0.5, 7 if QUICK else 15)
evaluate = jax.jit(mse)
grid_mse = [float(evaluate(jnp.full(N - 1, lam), train_noisy, train_clean)) for lam in grid]
best_lam = float(grid[int(np.argmin(grid_mse))])
plain_test = float(evaluate(jnp.full(N - 1, best_lam), test_noisy, test_clean))


@jax.jit
def train_step(state: tuple, idx: jax.Array) -> tuple[tuple, jax.Array]:
    """One Adam step (learning rate 0.1) on a = softplus⁻¹(w)."""
    a, m, v, t = state
    loss, g = jax.value_and_grad(
        lambda a: mse(jax.nn.softplus(a), train_noisy[idx], train_clean[idx]))(a)
    m, v, t = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2, t + 1
    a = a - 0.1 * (m / (1 - 0.9**t)) / (jnp.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return (a, m, v, t), loss


a0 = jnp.full(N - 1, np.log(np.expm1(best_lam)))
state = (a0, jnp.zeros(N - 1), jnp.zeros(N - 1), 0)
history = []
for _ in range(steps):
    state, loss = train_step(state, jnp.asarray(rng.integers(0, 200, 32)))
    history.append(float(loss))
learned = jax.nn.softplus(state[0])
learned_test = float(evaluate(learned, test_noisy, test_clean))
print(f"plain TV (λ = {best_lam:.2f}): test MSE {plain_test:.4f}; learned weights: "
      f"{learned_test:.4f} ({plain_test / learned_test:.1f}× lower)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(history)
axes[0].set(title="training MSE (jitted steps)", xlabel="step")
axes[1].bar(np.arange(N - 1) + 0.5, np.asarray(learned), width=0.8)
axes[1].axhline(best_lam, color="tab:orange", lw=1, label="plain TV's λ")
axes[1].set(title="learned weights wᵢ", xlabel="difference i")
axes[1].legend(fontsize=7)
fig.tight_layout()
plt.show()

# %%
assert plain_test / learned_test > (1.5 if QUICK else 2.0), (plain_test, learned_test)
