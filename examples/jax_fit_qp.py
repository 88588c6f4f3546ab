"""Fit the parameters of a QP layer with plain gradient descent under ``jax.jit``.

The layer maps a feature vector z to the solution of

    minimise ½ xᵀQx + (W z)ᵀx   subject to   G x ≤ h,

with Q and G fixed and W (the linear term's weights) and h (the constraint levels) learnt.
Targets come from the same layer with hidden true weights, so the loss can reach ~0. Each
step is one jitted call: a batched solve of every training QP and a batched vjp.

    python examples/jax_fit_qp.py
"""

import time

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np

from dpplayers.jax import CvxpyLayer

jax.config.update("jax_enable_x64", True)


def build_layer(n: int, m: int, rng: np.random.Generator) -> CvxpyLayer:
    L = rng.standard_normal((n, n))
    Q = L @ L.T + np.eye(n)
    G = rng.standard_normal((m, n))
    q, h = cp.Parameter(n), cp.Parameter(m)
    x = cp.Variable(n)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x), [G @ x <= h])
    return CvxpyLayer(problem, parameters=[q, h], variables=[x], solver="CLARABEL")


def main(steps: int = 300, lr: float = 2.0) -> None:
    rng = np.random.default_rng(0)
    n, m, d, samples = 6, 8, 4, 64
    layer = build_layer(n, m, rng)
    Z = jnp.asarray(rng.standard_normal((samples, d)))
    W_true, h_true = jnp.asarray(rng.standard_normal((n, d))), jnp.asarray(rng.uniform(0.1, 0.5, m))
    (X,) = layer(Z @ W_true.T, h_true)  # q is batched (one per sample), h is shared

    def loss(params):
        W, h = params
        (x,) = layer(Z @ W.T, h)
        return jnp.mean(jnp.sum((x - X) ** 2, axis=1))

    @jax.jit
    def step(params):
        value, grads = jax.value_and_grad(loss)(params)
        return value, jax.tree.map(lambda p, g: p - lr * g, params, grads)

    params = (jnp.asarray(rng.standard_normal((n, d))), jnp.ones(m))
    start = time.perf_counter()
    for k in range(steps + 1):
        value, params = step(params)
        if k % 30 == 0:
            print(f"step {k:4d}   loss {float(value):.3e}   ({time.perf_counter() - start:5.1f} s)")
    # h is identified only on constraints that some target touches
    print(f"|W - W_true| = {float(jnp.linalg.norm(params[0] - W_true)):.3e}")


if __name__ == "__main__":
    main()
