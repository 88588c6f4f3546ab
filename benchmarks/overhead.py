"""Per-call overhead of the forward pass against bare SCS, back to back (as in a training loop).

``run.py`` interleaves every library in each round, so each call starts with caches that
the other libraries (cvxpylayers, torch, JAX) have just flushed; Python-heavy code suffers
more from that than SCS's C. This script alternates only dpplayers' forward (NumPy API,
batch 1) with bare SCS on the same cone program and settings (set-up + solve, or update +
solve where dpplayers reuses the workspace; through SCS's Python wrapper, as a user of SCS
calls it), on the same parameter draws, and reports medians of many calls. ``--clock cpu``
times with the thread's CPU clock instead of the wall clock: on a shared machine other
jobs' load then stops counting (preemption is not CPU time), while caches and the solver's
work still do. ``--base REV`` also times dpplayers as it was at git revision REV
(``ab.py``'s export), in the same rounds, for a before/after under the same load.

    python benchmarks/overhead.py [--calls 300] [--workloads qp50 ...]  (default: all)
    python benchmarks/overhead.py --clock cpu --base 5f3af64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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


def measure(name: str, calls: int, clock=time.perf_counter,
            libraries: tuple = (dpplayers,)) -> tuple[list[float], float]:
    """(each library's forward, bare SCS): medians in ms over ``calls`` alternated rounds
    (the libraries' order swaps every round; bare SCS runs last)."""
    form = WORKLOADS[name].formulations()["native"]
    progs = [lib.compile(form.problem, list(form.parameters), [form.output], gp=form.gp)
             for lib in libraries]
    prog = progs[-1]
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

    ours: list[list[float]] = [[] for _ in progs]
    theirs = []
    for k in range(calls + 10):
        order = list(enumerate(progs))
        for i, p in order if k % 2 else order[::-1]:
            t0 = clock()
            p.solve(*draws[k % 7], solver_args=ARGS)
            t1 = clock()
            if k >= 10:
                ours[i].append(t1 - t0)
        t1 = clock()
        bare(data[k % 7])
        t2 = clock()
        if k >= 10:
            theirs.append(t2 - t1)
    return [1e3 * float(np.median(t)) for t in ours], 1e3 * float(np.median(theirs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS),
                        choices=list(WORKLOADS))
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    parser.add_argument("--base", help="git revision whose forward is timed alongside")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        libraries: tuple = (dpplayers,)
        if args.base:
            from benchmarks.ab import import_base
            libraries = (import_base(args.base, Path(tmp)), dpplayers)
            print(f"| workload | {args.base} forward (ms) | ratio | dpplayers forward (ms) "
                  "| bare SCS (ms) | ratio | overhead (ms) |")
            print("|---|---:|---:|---:|---:|---:|---:|")
        else:
            print("| workload | dpplayers forward (ms) | bare SCS (ms) | ratio | overhead (ms) |")
            print("|---|---:|---:|---:|---:|")
        for name in args.workloads:
            times, bare = measure(name, args.calls, CLOCKS[args.clock], libraries)
            ours = times[-1]
            before = (f"{times[0]:.3f} | {times[0] / bare:.2f} | " if args.base else "")
            print(f"| {name} | {before}{ours:.3f} | {bare:.3f} | {ours / bare:.2f} | "
                  f"{ours - bare:.3f} |", flush=True)


if __name__ == "__main__":
    main()
