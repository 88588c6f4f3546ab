"""Where the dense QP route pays: its forward against the conic path's, per size and batch.

The thresholds in ``dpplayers/_solve/qp_route.py`` (MIN_BATCH, MAX_ORDER) come from this
script. For OptNet QPs of several sizes (every datum a parameter, fresh values per call)
and batches, dpplayers' forward (``prog.solve``, SCS at eps 1e-8 on the conic path) is
timed with the route forced (its MIN_BATCH, MIN_ORDER and MIN_FILL lowered to nothing) and
with it turned off, the two interleaved call by call; medians of ``--rounds``. Also the forward+backward (one vjp).

    python benchmarks/qp_route.py [--rounds 7] [--sizes tiny qp50 qp200 qp300]
    python benchmarks/qp_route.py --sizes --workloads lp_inactive mpc20 --batches 8 32
    python benchmarks/qp_route.py --accuracy qp50 qp200   # the route's gradients, batch 32

``--accuracy``: every element of a batch of 32 solved by the route (SCS settings of the
benchmarks, eps 1e-8) against the tight reference of ``benchmarks/accuracy.py`` (Clarabel at
1e-10 plus 3 Newton steps, element by element: at batch 1 the route is not taken): the
largest relative error of x and of the gradient (‖g − g_ref‖ / ‖g_ref‖ over all parameters,
Q's gradient symmetrised), for a random cotangent per element.
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
from benchmarks.accuracy import REFERENCE_ARGS
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


def accuracy(name: str, batch: int = 32) -> None:
    """The route's x and gradients against the tight reference, element by element."""
    form = WORKLOADS[name].formulations()["native"]
    vals = WORKLOADS[name].values(batch, 5)["native"]
    prog = dpplayers.compile(form.problem, list(form.parameters), [form.output])
    ref_prog = dpplayers.compile(form.problem, list(form.parameters), [form.output],
                                 solver="CLARABEL")
    sol = prog.solve(*vals, solver_args={"eps": 1e-8, "max_iters": 100_000})
    assert all(i["status"] == qp_route.SOLVER_STATUS for i in sol.info), "route not taken"
    cot = np.random.default_rng(0).standard_normal((batch, *form.output.shape))
    grads = sol.vjp(cot)
    x_err = g_err = 0.0
    swapped = 0
    for k in range(batch):
        one = [v[k:k + 1] for v in vals]
        ref = ref_prog.solve(*one, solver_args=REFERENCE_ARGS)
        if kkt_residual(ref_prog, one, ref) > 1e-9:  # Clarabel + Newton fell short here:
            swapped += 1  # SCS at 1e-10 + Newton, where it does better
            other = prog.solve(*one, solver_args={**REFERENCE_ARGS, "max_iters": 200_000})
            if kkt_residual(prog, one, other) < kkt_residual(ref_prog, one, ref):
                ref = other
        ref_grads = ref.vjp(cot[k:k + 1])
        x = sol.values[0][k]
        x_err = max(x_err, np.linalg.norm(x - ref.values[0][0]) / np.linalg.norm(ref.values[0][0]))
        sym = [(g[k] + g[k].T) / 2 if s else g[k] for g, s in zip(grads, form.symmetric)]
        rsym = [(g[0] + g[0].T) / 2 if s else g[0] for g, s in zip(ref_grads, form.symmetric)]
        a = np.concatenate([g.ravel() for g in sym])
        b = np.concatenate([g.ravel() for g in rsym])
        g_err = max(g_err, np.linalg.norm(a - b) / np.linalg.norm(b))
    print(f"{name} batch {batch}: route x_rel_err {x_err:.1e}, grad_rel_err {g_err:.1e} "
          f"(largest over elements; {swapped} element(s) where the Clarabel reference's KKT "
          "residual was above 1e-9 checked against SCS's instead)", flush=True)


def kkt_residual(prog, values, sol) -> float:
    """max |Px + c + Aᵀy|, |Ax + s − b| of a batch-1 solution, relative to 1 + |data|."""
    theta = prog.layout.stack(values)[0]
    P, A, b, c = prog.element_data(prog.data(theta), 0)
    x, y, s = sol.x[:, 0], sol.y[:, 0], sol.s[:, 0]
    Px = P @ x + P.T @ x - P.diagonal() * x if P is not None else 0.0
    dual = np.abs(Px + c + A.T @ y).max() / (1 + np.abs(c).max())
    primal = np.abs(A @ x + s - b).max() / (1 + np.abs(b).max())
    return float(max(dual, primal))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", nargs="*", default=list(SIZES))
    parser.add_argument("--workloads", nargs="*", default=[],
                        help="benchmarks/workloads.py workloads to time the same way")
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--accuracy", nargs="*", default=None, metavar="WORKLOAD")
    args = parser.parse_args()
    if args.accuracy is not None:
        for name in args.accuracy:
            accuracy(name)
        return
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
                    on = way == "route"  # the route for any size and fill, or never
                    qp_route.MIN_BATCH, qp_route.MIN_ORDER = (1, 0) if on else (10**9, 10**9)
                    qp_route.MIN_FILL = 0.0 if on else 1.0
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
