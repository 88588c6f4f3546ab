"""dpplayers at an earlier revision against this checkout, in one process, call by call.

Full runs of ``run.py`` minutes apart differ by up to ±20% on this shared machine, too much
to see a change of a few percent. This script exports the package as it was at ``--base``
(``git archive``) under the name ``dpplayers_base``, compiles each workload with both, and
alternates them call by call (forward, then a vjp of a fixed cotangent; the order swaps
every round), so load from other jobs hits both alike. Each round solves the next of
``run.DRAWS`` parameter draws, as a training loop meets new data: one draw re-solved would
let SCS's kept workspace (or carried scale) look faster than it is. Medians over the rounds,
NumPy API, SCS at eps 1e-8; ratios are this checkout over the base.

    python benchmarks/ab.py --base 6a3eeed [--workloads qp50 sigmoid] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import dpplayers
from benchmarks.run import DRAWS, QUICK_WORKLOADS
from benchmarks.workloads import WORKLOADS

ARGS = {"eps": 1e-8}
ROOT = Path(__file__).resolve().parent.parent


def import_base(revision: str, into: Path):
    """The ``dpplayers`` package at ``revision``, imported as ``dpplayers_base``."""
    archive = subprocess.run(["git", "archive", revision, "dpplayers"], cwd=ROOT,
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "dpplayers_base"
    (into / "dpplayers").rename(package)
    for source in package.rglob("*.py"):  # absolute self-imports, as some revisions have
        text = source.read_text()
        source.write_text(re.sub(r"^from dpplayers\.", "from dpplayers_base.", text,
                                 flags=re.MULTILINE))
    sys.path.insert(0, str(into))
    return importlib.import_module("dpplayers_base")


def compare(libraries: tuple, workload: str, batch: int, rounds: int) -> dict[str, tuple]:
    """Median (forward, backward) seconds per library on one workload and batch size."""
    w = WORKLOADS[workload]
    forms = w.formulations()
    key = "native" if "native" in forms else next(iter(forms))
    form = forms[key]
    draws = [w.values(batch, d)[key] for d in range(DRAWS)]
    programs = [lib.compile(form.problem, list(form.parameters), [form.output], gp=form.gp)
                for lib in libraries]
    cotangent = None
    times = {lib.__name__: ([], []) for lib in libraries}
    for r in range(rounds):
        order = list(zip(libraries, programs))
        for lib, prog in order if r % 2 else order[::-1]:
            start = time.perf_counter()
            sol = prog.solve(*draws[r % DRAWS], solver_args=ARGS)
            mid = time.perf_counter()
            if cotangent is None:
                cotangent = np.random.default_rng(0).standard_normal(sol.values[0].shape)
            sol.vjp(cotangent)
            end = time.perf_counter()
            times[lib.__name__][0].append(mid - start)
            times[lib.__name__][1].append(end - mid)
    return {name: (float(np.median(f)), float(np.median(b))) for name, (f, b) in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--workloads", nargs="+", default=list(QUICK_WORKLOADS),
                    choices=list(WORKLOADS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1])
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # inaccurate-solve and symmetry warnings, not timings
    with tempfile.TemporaryDirectory() as tmp:
        base = import_base(args.base, Path(tmp))
        print(f"base {args.base} against this checkout; ms, medians of {args.rounds} rounds")
        for workload in args.workloads:
            for batch in args.batches:
                t = compare((base, dpplayers), workload, batch, args.rounds)
                (fo, bo), (fn, bn) = t["dpplayers_base"], t["dpplayers"]
                print(f"{workload:9} B={batch:<3} forward {1e3 * fo:7.3f} -> {1e3 * fn:7.3f} "
                      f"({fn / fo:4.2f})  backward {1e3 * bo:7.3f} -> {1e3 * bn:7.3f} "
                      f"({bn / bo:4.2f})  fwd+bwd ({(fn + bn) / (fo + bo):4.2f})", flush=True)


if __name__ == "__main__":
    main()
