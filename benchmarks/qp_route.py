"""Where the dense QP route pays: its forward against the conic path's, per size and batch.

The thresholds in ``dpplayers/_solve/qp_route.py`` (MIN_BATCH, MAX_ORDER) come from this
script. For OptNet QPs of several sizes (every datum a parameter, fresh values per call)
and batches, dpplayers' forward (``prog.solve``, SCS at eps 1e-8 on the conic path) is
timed with the route allowed and with it turned off (MIN_BATCH raised past the batch), the
two interleaved call by call; medians of ``--rounds``. Also the forward+backward (one vjp).

    python benchmarks/qp_route.py [--rounds 7] [--sizes tiny qp50 qp200 qp300]
    python benchmarks/qp_route.py --sizes --workloads lp_inactive mpc20 --batches 8 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import cvxpy as cp
import numpy as np

import dpplayers
from benchmarks.workloads import WORKLOADS
from dpplayers._solve import qp_route

SIZES = {"tiny": (8, 5, 2), "small": (20, 10, 4), "qp50": (50, 25, 10), "qp200": (200, 100, 50),
         "qp300": (300, 150, 50)}
BATCHES = {"tiny": (1, 4, 8, 16, 32), "small": (8, 16, 32), "qp50": (1, 4, 8, 16, 32), "qp200": (4, 8, 32),
           "qp300": (8, 32)}


def problem(n: int, n_ineq: int, n_eq: int):
    z = cp.Variable(n)
    Q = cp.Parameter((n, n), PSD=True)
    q, G, h = cp.Parameter(n), cp.Parameter((n_ineq, n)), cp.Parameter(n_ineq)
    A, b = cp.Parameter((n_eq, n)), cp.Parameter(n_eq)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, Q) + q @ z), [G @ z <= h, A @ z == b])
    return prob, [Q, q, G, h, A, b], z


def values(rng, n, n_ineq, n_eq, B):
    M = rng.standard_normal((B, n, n))
    Q = M @ M.transpose(0, 2, 1) / n + 0.1 * np.eye(n)
    G, A = rng.standard_normal((B, n_ineq, n)), rng.standard_normal((B, n_eq, n))
    z0 = rng.standard_normal((B, n))
    h = np.einsum("bij,bj->bi", G, z0) + rng.uniform(0.1, 1.0, (B, n_ineq))
    return [Q, rng.standard_normal((B, n)), G, h, A, np.einsum("bij,bj->bi", A, z0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", nargs="*", default=list(SIZES))
    parser.add_argument("--workloads", nargs="*", default=[],
                        help="benchmarks/workloads.py workloads to time the same way")
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    args = parser.parse_args()
    print(f"{'size':>6} {'n+m':>5} {'B':>4}  {'fwd route':>10} {'fwd conic':>10} "
          f"{'ratio':>6}  {'f+b route':>10} {'f+b conic':>10} {'ratio':>6}  (ms)")
    jobs = [(name, *problem(*SIZES[name]), BATCHES[name]) for name in args.sizes]
    for name in args.workloads:
        form = WORKLOADS[name].formulations()["native"]
        jobs.append((name, form.problem, list(form.parameters), form.output, args.batches))
    for name, prob, params, z, batches in jobs:
        prog = dpplayers.compile(prob, params, [z])
        for B in batches:
            if name in WORKLOADS:
                draws = [WORKLOADS[name].values(B, d)["native"] for d in range(3)]
            else:
                n, n_ineq, n_eq = SIZES[name]
                rng = np.random.default_rng(B)
                draws = [values(rng, n, n_ineq, n_eq, B) for _ in range(3)]
            shape = (B, *z.shape)
            times: dict[str, list[tuple[float, float]]] = {"route": [], "conic": []}
            routed = True
            for r in range(args.rounds + 1):
                for way in ("route", "conic"):
                    qp_route.MIN_BATCH = 1 if way == "route" else 10**9
                    vals = draws[r % 3]
                    t0 = time.perf_counter()
                    sol = prog.solve(*vals, solver_args={"eps": 1e-8})
                    t1 = time.perf_counter()
                    sol.vjp(np.ones(shape))
                    t2 = time.perf_counter()
                    if way == "route":
                        routed &= all(i["status"] == qp_route.SOLVER_STATUS for i in sol.info)
                    if r:  # the first round warms up
                        times[way].append((t1 - t0, t2 - t0))
            med = {w: [1e3 * statistics.median(t[i] for t in times[w]) for i in (0, 1)]
                   for w in times}
            print(f"{name:>6} {prog.n + prog.m:>5} {B:>4}  {med['route'][0]:10.2f} "
                  f"{med['conic'][0]:10.2f} {med['conic'][0] / med['route'][0]:6.2f}  "
                  f"{med['route'][1]:10.2f} {med['conic'][1]:10.2f} "
                  f"{med['conic'][1] / med['route'][1]:6.2f}"
                  f"{'' if routed else '  (some elements fell back)'}", flush=True)


if __name__ == "__main__":
    main()
