"""Forward+grad of dpplayers.jax, jitted and eager, against cvxpylayers.jax (issues #5, #21).

cvxpylayers.jax cannot run under ``jax.jit`` (its solve converts tracers to NumPy), so its
column is its eager ``value_and_grad``. Same solver (SCS) and tolerance for both; medians
of 15 calls on fresh parameter values.

    python benchmarks/jax_jit.py
"""

from __future__ import annotations

import statistics
import time

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np

from dpplayers.jax import CvxpyLayer

jax.config.update("jax_enable_x64", True)
ARGS = {"eps": 1e-8}


def problems():
    m, n = 20, 10
    F, g = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    yield "QP (nonneg least squares, F 20×10)", cp.Problem(
        cp.Minimize(cp.sum_squares(F @ x - g)), [x >= 0]), [F, g], x
    A, b = cp.Parameter((15, 8)), cp.Parameter(15)
    y = cp.Variable(8)
    yield "SOCP (norm residual, A 15×8)", cp.Problem(
        cp.Minimize(cp.norm(A @ y - b, 2) + 0.1 * cp.sum_squares(y)), [y <= 1, y >= -1]), [A, b], y


def median_ms(fn, draws) -> float:
    fn(*draws[0])  # compile / warm up
    times = []
    for values in draws[1:]:
        start = time.perf_counter()
        jax.block_until_ready(fn(*values))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    from cvxpylayers.jax import CvxpyLayer as Peer

    rng = np.random.default_rng(0)
    print(f"{'problem':<36}{'B':>4}{'dpplayers jit':>16}{'eager':>11}{'cvxpylayers':>14}"
          f"{'jit/cvxl':>10}{'eager/cvxl':>12}")
    for name, prob, params, var in problems():
        ours = CvxpyLayer(prob, params, [var], solver_args=ARGS)
        peer = Peer(prob, parameters=params, variables=[var])
        for batch in (1, 32):
            draws = [[jnp.asarray(rng.standard_normal((batch, *p.shape)) if batch > 1
                                  else rng.standard_normal(p.shape)) for p in params]
                     for _ in range(16)]

            def loss_ours(*v, layer=ours):
                return jnp.sum(layer(*v)[0] ** 2)

            def loss_peer(*v, layer=peer):
                return jnp.sum(layer(*v, solver_args=ARGS)[0] ** 2)

            argnums = tuple(range(len(params)))
            t_ours = median_ms(jax.jit(jax.value_and_grad(loss_ours, argnums)), draws)
            t_eager = median_ms(jax.value_and_grad(loss_ours, argnums), draws)
            t_peer = median_ms(jax.value_and_grad(loss_peer, argnums), draws)
            print(f"{name:<36}{batch:>4}{t_ours:>13.1f} ms{t_eager:>8.1f} ms{t_peer:>11.1f} ms"
                  f"{t_ours / t_peer:>10.2f}{t_eager / t_peer:>12.2f}")


if __name__ == "__main__":
    main()
