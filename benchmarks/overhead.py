"""Per-call overhead of the forward pass against bare SCS, back to back (as in a training loop).

``run.py`` interleaves every library in each round, so each call starts with caches that
the other libraries (cvxpylayers, torch, JAX) have just flushed; Python-heavy code suffers
more from that than SCS's C. This script alternates only dpplayers' forward (NumPy API,
batch 1) with bare SCS on the same cone program and settings (set-up + solve, or update +
solve where dpplayers reuses the workspace), on the same parameter draws, and reports
medians of many calls. ``--clock cpu`` times with the thread's CPU clock instead of the
wall clock: on a shared machine other jobs' load then stops counting (preemption is not
CPU time), while caches and the solver's work still do.

    python benchmarks/overhead.py [--calls 300] [--workloads qp50 ...]  (default: all)
    python benchmarks/overhead.py --clock cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import scs

import dpplayers
from benchmarks.workloads import WORKLOADS

ARGS = {"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iters": 100_000}


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def measure(name: str, calls: int, clock=time.perf_counter) -> tuple[float, float]:
    """(dpplayers forward, bare SCS) medians in ms over ``calls`` alternated calls."""
    form = WORKLOADS[name].formulations()["native"]
    prog = dpplayers.compile(form.problem, list(form.parameters), [form.output], gp=form.gp)
    draws = [[v[0] for v in WORKLOADS[name].values(1, d)["native"]] for d in range(7)]
    settings = prog.backend.settings(ARGS)
    cones = prog.backend._cone_dict
    reuse = prog.C_A.is_constant and (prog.C_P is None or prog.C_P.is_constant)
    data = []
    for values in draws:
        P, A, b, c = prog.element_data(prog.data(prog.layout.stack(values)[0]), 0)
        data.append({"A": A, "b": b, "c": c} | ({"P": P} if P is not None else {}))
    workspace = scs.SCS(data[0], cones, **settings) if reuse else None

    def bare(d: dict) -> None:
        if workspace is None:
            scs.SCS(d, cones, **settings).solve(warm_start=False)
        else:
            workspace.update(b=d["b"], c=d["c"])
            workspace.solve(warm_start=False)

    ours, theirs = [], []
    for k in range(calls + 10):
        t0 = clock()
        prog.solve(*draws[k % 7], solver_args=ARGS)
        t1 = clock()
        bare(data[k % 7])
        t2 = clock()
        if k >= 10:
            ours.append(t1 - t0)
            theirs.append(t2 - t1)
    return 1e3 * float(np.median(ours)), 1e3 * float(np.median(theirs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS),
                        choices=list(WORKLOADS))
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    args = parser.parse_args()
    print("| workload | dpplayers forward (ms) | bare SCS (ms) | ratio | overhead (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name in args.workloads:
        ours, bare = measure(name, args.calls, CLOCKS[args.clock])
        print(f"| {name} | {ours:.3f} | {bare:.3f} | {ours / bare:.2f} | {ours - bare:.3f} |")


if __name__ == "__main__":
    main()
