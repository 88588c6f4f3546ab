"""What each of the derivative's routes gains, on the workloads it applies to.

Issue #18: a route (and the tuning constant that steers it) earns its keep only if it gains
about 10% somewhere. Each entry of ``ROUTES`` names a module constant and the value that
turns its route off (or forces the alternative); this script compiles each workload twice,
once as shipped and once with that value in force (during the compile and every call), and
alternates the two call by call in one process (forward, then a vjp of a fixed cotangent;
the order swaps every round), so load from other jobs hits both alike. Medians over the
rounds, NumPy API, SCS at eps 1e-8. The ratio printed is route off / route on: above 1,
the route gains.

    python benchmarks/routes.py [--routes DIAGONAL_MIN ...] [--batches 1 8 32] [--rounds 60]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import dpplayers
from benchmarks.workloads import WORKLOADS
from dpplayers._derivative import linear_solvers, pair_pivots, pattern, plan, tiles

#: SCS's scale fixed at its default: both programs then solve each draw to the same x (a
#: fresh workspace would otherwise start from the scale its own last solve ended at, and
#: |Δgrad| would show the forward's differences, ~1e-7, not the route's).
ARGS = {"eps": 1e-8, "scale": 0.1}
OFF = 10**9  # an order no problem here reaches


@dataclass(frozen=True)
class Route:
    """A route: the constant that steers it, the value that turns it off, and where it
    applies (the workloads whose derivative takes it, from instrumented runs)."""

    module: ModuleType
    constant: str
    off: object
    what: str
    workloads: tuple[str, ...]
    name: str = ""  # where two routes share a constant's name (default: the constant)


ROUTES = {r.name or r.constant: r for r in (
    Route(plan, "DENSE_ORDER", -1, "small J of a batch in one LAPACK call",
          ("qp50", "soc_proj", "ncm", "eq_lsq", "lp_inactive")),
    Route(plan, "MIXED_MIN_ORDER", -1, "a quarter-full J of a batch solved together up to order 500",
          ("qp200", "ncm_norm"), "FULL_BATCHED"),
    Route(pair_pivots, "DIAGONAL_MIN", OFF, "S's leading diagonal pivots eliminated first",
          ("soc_proj", "ncm", "eq_lsq", "mpc20", "sparsemax", "psd_proj")),
    Route(pair_pivots, "SCHUR_TERMS_MAX", -1, "S's update summed pair by pair (off: one dense product)",
          ("qp50", "soc_proj", "ncm", "lasso", "psd_proj")),
    Route(pattern, "DENSE_BLOCK", OFF, "AᵀD of large cone blocks as dense products",
          ("soc_proj", "ncm", "ncm_norm", "lsq_norm", "psd_proj")),
    Route(tiles, "TILE_MIN_ENTRIES", OFF, "D's large blocks written into the blocks as tiles",
          ("psd_proj", "ncm")),
    Route(linear_solvers, "MIXED_MIN_ORDER", OFF, "dense LUs in single precision, refined",
          ("sparse_lp",)),
    Route(linear_solvers, "DENSE_FRACTION", 2.0,
          "a full J, or one whose SuperLU filled in, factorised densely (off: SuperLU)",
          ("qp200", "ncm_norm", "lsq_norm", "mpc20", "sparse_lp")),
)}


@contextlib.contextmanager
def switched(route: Route | None) -> Iterator[None]:
    """The route's constant set to its off value for the duration (nothing for None)."""
    if route is None:
        yield
        return
    old = getattr(route.module, route.constant)
    setattr(route.module, route.constant, route.off)
    try:
        yield
    finally:
        setattr(route.module, route.constant, old)


def compare(route: Route, workload: str, batch_size: int, rounds: int) -> tuple[float, float, float]:
    """Median backward with the route on and off, and the largest gradient difference."""
    w = WORKLOADS[workload]
    forms = w.formulations()
    form = forms["native"] if "native" in forms else next(iter(forms.values()))
    key = "native" if "native" in forms else next(iter(forms))
    values = w.values(batch_size)[key]
    sides = []
    for which in (None, route):
        with switched(which):
            sides.append((which, dpplayers.compile(form.problem, list(form.parameters),
                                                   [form.output], gp=form.gp)))
    times: dict[int, list[float]] = {0: [], 1: []}
    cotangent, grads = None, [None, None]
    for r in range(rounds):
        for i in ((0, 1) if r % 2 else (1, 0)):
            which, prog = sides[i]
            with switched(which):
                sol = prog.solve(*values, solver_args=ARGS)
                if cotangent is None:
                    cotangent = np.random.default_rng(0).standard_normal(sol.values[0].shape)
                start = time.perf_counter()
                g = sol.vjp(cotangent)
                times[i].append(time.perf_counter() - start)
            grads[i] = g
    diff = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(*grads))
    return float(np.median(times[0])), float(np.median(times[1])), diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS),
                    help="instead of each route's own")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # inaccurate-solve and symmetry warnings, not timings
    print(f"backward ms, medians of {args.rounds} rounds; ratio = route off / on")
    for name in args.routes:
        route = ROUTES[name]
        print(f"{name}: {route.what}", flush=True)
        for workload in args.workloads or route.workloads:
            for b in args.batches:
                on, off, diff = compare(route, workload, b, args.rounds)
                print(f"  {workload:11} B={b:<3} on {1e3 * on:8.3f}  off {1e3 * off:8.3f}  "
                      f"({off / on:4.2f})  |Δgrad| {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
