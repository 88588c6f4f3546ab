"""The band LU's backward against the batched dense executor's, on problems of growing size.

``dpplayers._derivative.banded`` takes J whose unknowns lie within a narrow band in reverse
Cuthill–McKee order (possibly once a dense border is set aside) where its multiply-adds are
at most the dense LU's at the batched executor's smallest order. This script measures that
choice: each problem is compiled twice, once as shipped and once with the band route off,
and the two vjps alternate call by call on the same solutions (forward once per round, SCS
at eps 1e-8 with its scale fixed, new parameter values every round). Medians of the rounds,
NumPy API; ratio = band / off (below 1, the band LU gains); |Δgrad| between the two.

    python benchmarks/band_route.py [--families tv mpc entropy logistic] [--rounds 15]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cvxpy as cp
import numpy as np

import dpplayers

Sampler = Callable[[np.random.Generator, int], list[np.ndarray]]
Problem = tuple[cp.Problem, list[cp.Parameter], cp.Variable, Sampler]
ARGS = {"eps": 1e-8, "scale": 0.1}


def total_variation(n: int) -> Problem:
    """min ‖x − y‖² + ½‖Dx‖₁ over n points: a chain of differences."""
    x, y = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y) + 0.5 * cp.norm1(cp.diff(x))))
    return problem, [y], x, lambda rng, B: [0.3 * rng.standard_normal((B, n)).cumsum(1)]


def mpc(T: int, nx: int = 4, nu: int = 2) -> Problem:
    """benchmarks' mpc20 at horizon T."""
    x, u = cp.Variable((nx, T + 1)), cp.Variable((nu, T))
    x0, A, Bm = cp.Parameter(nx), cp.Parameter((nx, nx)), cp.Parameter((nx, nu))
    cons = [x[:, 0] == x0, x[:, 1:] == A @ x[:, :-1] + Bm @ u, u <= 1, u >= -1]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x) + 0.1 * cp.sum_squares(u)), cons)
    return problem, [x0, A, Bm], u, lambda rng, B: [
        3 * rng.standard_normal((B, nx)), np.eye(nx) + 0.1 * rng.standard_normal((B, nx, nx)),
        rng.standard_normal((B, nx, nu))]


def entropy(n: int) -> Problem:
    """min cᵀx − Σ entr(x) s.t. x ≤ 1: an exponential cone per entry."""
    x, c = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(c @ x - cp.sum(cp.entr(x))), [x <= 1])
    return problem, [c], x, lambda rng, B: [rng.standard_normal((B, n))]


def logistic(m: int, n: int = 10) -> Problem:
    """ℓ2-regularised logistic regression on m samples (rows z_i = y_i x_i, the labels
    folded in): the coefficients are J's border."""
    w, Z = cp.Variable(n), cp.Parameter((m, n))
    problem = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-(Z @ w))) / m
                                     + 0.1 * cp.sum_squares(w)))

    def sample(rng: np.random.Generator, B: int) -> list[np.ndarray]:
        X = rng.standard_normal((B, m, n))
        y = np.sign(X @ rng.standard_normal(n) + 0.5 * rng.standard_normal((B, m)))
        return [X * y[..., None]]
    return problem, [Z], w, sample


def simplex(n: int) -> Problem:
    """sparsemax: the projection of y onto the probability simplex (benchmarks' sparsemax
    at n = 100): Σ x = 1 is J's border of one."""
    x, y = cp.Variable(n), cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0])
    return problem, [y], x, lambda rng, B: [rng.standard_normal((B, n)) / 3.0]


FAMILIES: dict[str, tuple[Callable[[int], Problem], tuple[int, ...]]] = {
    "tv": (total_variation, (5, 20, 50, 100, 200, 400)),
    "mpc": (mpc, (3, 5, 8, 10, 20, 40)),
    "simplex": (simplex, (10, 20, 25, 40, 100, 300)),
    "entropy": (entropy, (3, 10, 30, 100, 300)),
    "logistic": (logistic, (25, 100, 400)),
}


def compare(name: str, problem: Problem, batches: tuple[int, ...], rounds: int) -> None:
    prob, params, out, sample = problem
    on = dpplayers.compile(prob, params, [out])
    off = dpplayers.compile(prob, params, [out])
    layout = on.kkt_pattern.band
    # the route off: the second program's pattern has no layout (set before its first use)
    off.kkt_pattern.__dict__["band"] = None
    where = "not taken" if layout is None else \
        f"J {layout.order}, kl {layout.kl}, ku {layout.ku}, border {layout.border}"
    for B in batches:
        times: dict[str, list[float]] = {"on": [], "off": []}
        rng = np.random.default_rng(0)
        gap = 0.0
        for r in range(rounds):
            values = sample(rng, B)
            sols = {"on": on.solve(*values, solver_args=ARGS),
                    "off": off.solve(*values, solver_args=ARGS)}
            cot = np.random.default_rng(r).standard_normal(np.shape(sols["on"].values[0]))
            grads = {}
            for k in (("on", "off") if r % 2 else ("off", "on")):
                t0 = time.perf_counter()
                grads[k] = sols[k].vjp(cot)
                times[k].append(time.perf_counter() - t0)
            gap = max(gap, max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1.0))
                               for a, b in zip(grads["on"], grads["off"])))
        t_on, t_off = (1e3 * np.median(times[k]) for k in ("on", "off"))
        print(f"{name:12s} B={B:<4d} band {t_on:8.3f} ms  off {t_off:8.3f} ms  "
              f"({t_on / t_off:.2f})  |Δgrad| {gap:.1e}  [{where}]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for family in args.families:
        build, sizes = FAMILIES[family]
        for size in sizes:
            compare(f"{family}{size}", build(size), tuple(args.batches), args.rounds)


if __name__ == "__main__":
    main()
