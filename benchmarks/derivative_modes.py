"""vjp time / forward-solve time per derivative mode, and the cost of a full Jacobian.

Issue #3's measurements: a 50-variable QP, a 100-variable exponential-cone problem and a
10×10 SDP (vjp in each mode, as a multiple of one forward solve at batch 1), and a full
Jacobian of 50 variables × 2,000 parameter entries in "direct" mode.

    python benchmarks/derivative_modes.py
"""

from __future__ import annotations

import functools
import statistics
import time

import cvxpy as cp
import numpy as np

import dpplayers

MODES = ("direct", "dense", "lsqr", "lsmr")
ARGS = {"eps": 1e-8}


def median_time(fn, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def qp50(rng):
    n, m, p = 50, 10, 25
    Q = cp.Parameter((n, n), PSD=True)
    q, A, b, G, h = (cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m),
                     cp.Parameter((p, n)), cp.Parameter(p))
    z = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [A @ z == b, G @ z <= h])
    L, Av, Gv, z0 = (rng.standard_normal((n, n)), rng.standard_normal((m, n)),
                     rng.standard_normal((p, n)), rng.standard_normal(n))
    values = [L @ L.T / n + np.eye(n), rng.standard_normal(n), Av, Av @ z0, Gv,
              Gv @ z0 + rng.uniform(0.1, 1, p)]
    return prob, [Q, q, A, b, G, h], [z], values


def exp100(rng):
    n = 100
    zp = cp.Parameter(n)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Maximize(zp @ x + cp.sum(cp.entr(x) + cp.entr(1 - x))))
    return prob, [zp], [x], [rng.standard_normal(n)]


def sdp10(rng):
    n = 10
    C = cp.Parameter((n, n), symmetric=True)
    X = cp.Variable((n, n), symmetric=True)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), [X >> 0, cp.diag(X) == 1])
    S = rng.standard_normal((n, n))
    return prob, [C], [X], [(S + S.T) / 2 + np.eye(n)]


def jac50x2000(rng):
    m, n = 40, 50  # F has 2,000 entries
    F, g = cp.Parameter((m, n)), cp.Parameter(m)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + 0.1 * cp.sum_squares(x)),
                      [x >= -1, x <= 1])
    return prob, [F, g], [x], [rng.standard_normal((m, n)), rng.standard_normal(m)]


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'problem':<10}{'forward ms':>12}" + "".join(f"{m + ' ×fwd':>14}" for m in MODES))
    for name, build in (("qp50", qp50), ("exp100", exp100), ("sdp10", sdp10)):
        prob, params, variables, values = build(rng)
        prog = dpplayers.compile(prob, params, variables)
        fwd = median_time(functools.partial(prog.solve, *values, solver_args=ARGS))
        ct = [np.ones(v.shape) for v in prog.solve(*values, solver_args=ARGS).values]
        ratios = []
        for mode in MODES:
            sols = iter([prog.solve(*values, solver_args={**ARGS, "mode": mode})
                         for _ in range(15)])
            ratios.append(median_time(lambda s=sols, c=ct: next(s).vjp(*c)) / fwd)
        print(f"{name:<10}{1e3 * fwd:>12.2f}" + "".join(f"{r:>14.2f}" for r in ratios))
    prob, params, variables, values = jac50x2000(rng)
    prog = dpplayers.compile(prob, params, variables)
    fwd = median_time(lambda: prog.solve(*values, solver_args=ARGS))
    sols = [prog.solve(*values, solver_args=ARGS) for _ in range(7)]
    it = iter(sols)
    jac = median_time(lambda: next(it).jacobian(), repeats=7)
    print(f"\nfull Jacobian 50 × 2000 (direct): {1e3 * jac:.1f} ms = {jac / fwd:.2f} × forward "
          f"({1e3 * fwd:.1f} ms)")


if __name__ == "__main__":
    main()
