"""Benchmark dpplayers against cvxpylayers, qpth and the bare solver; speed and accuracy.

    python benchmarks/run.py                      # default suite (about 15 minutes on 2 cores)
    python benchmarks/run.py --quick              # a smaller suite (about 2 minutes)
    python benchmarks/run.py --workloads qp50 sigmoid --batches 1 32 --repeats 7
    python benchmarks/run.py --libraries dpplayers cvxpylayers "scs (bare)"

Writes benchmarks/results/results.json and results.png, and the tables in
benchmarks/README.md (``--no-readme`` leaves the README alone). See benchmarks/README.md for
what is measured and how.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import accuracy, report
from benchmarks.libraries import LIBRARIES, Config, jacobian_unsupported
from benchmarks.timing import Round, Timing, TrainingLoop, after_round, interleave, release_memory
from benchmarks.workloads import WORKLOADS, Workload

QUICK_WORKLOADS = ("qp50", "lasso", "sigmoid", "soc_proj", "ncm")
#: SCS tolerance per workload, for every SCS-based library alike (bare SCS included), so
#: timings stay comparable: 1e-8 (DEFAULT_EPS) unless SCS's answer at 1e-8 is what puts a
#: gradient above 1e-8 from the tight reference (accuracy.py). Measured at the accuracy probe
#: (dpplayers; x error / gradient error / directional error against the finite difference):
#: gp_box 1.3e-8 / 7.0e-8 / 3.2e-8 at 1e-8, 5.6e-9 / 3.0e-8 / 1.3e-8 at 1e-9, 4.3e-11 /
#: 3.4e-10 / 2.0e-10 at 1e-10; psd_proj 2.9e-8 / 3.9e-9 / 2.8e-8 at 1e-8, 2.7e-14 / 2.1e-14 /
#: 9.5e-9 at 1e-9 (the finite difference's own resolution: reference_vs_fd 9.5e-9); ncm_norm
#: 3.9e-9 / 9.7e-9 / 1.6e-8 at 1e-8, 1.1e-10 / 2.3e-10 / 2.4e-11 at 1e-9. The derivative
#: evaluated at a tight solution is exact there (reference_vs_fd ≤ 1e-9, and a Newton-polished
#: SCS answer, ``refine: 1``, gives 6.7e-11, 9.5e-9, 2.6e-10): the error is the solve's. Cost
#: in SCS iterations (7 draws, mean): gp_box 129 → 157, psd_proj 68 → 61, ncm_norm 89 → 96.
#: pnorm is not here: its x error is 9.7e-10 at every eps down to 1e-10 (SCS projects onto
#: power cones by Newton's method to a fixed 1e-9, POW_CONE_TOL), see benchmarks/README.md.
EPS: dict[str, float] = {"gp_box": 1e-10, "psd_proj": 1e-9, "ncm_norm": 1e-9}
DEFAULT_EPS, MAX_ITERS = 1e-8, 100_000
JACOBIAN_BATCHES = (1, 32)
#: Distinct draws of parameter values that successive calls cycle through: more than any
#: cache of recent solutions a layer keeps (dpplayers.jax keeps the last 4).
DRAWS = 7
#: Cases too slow for every library within the default run's budget: only these libraries,
#: and no warm-up round (the smaller batches have warmed everything up).
HEAVY = {("qp200", 128): ("dpplayers-torch", "cvxpylayers", "qpth", "scs (bare)")}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small suite, about 2 minutes")
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), metavar="NAME",
                    help=f"workloads to run (default: all; --quick: {', '.join(QUICK_WORKLOADS)})")
    ap.add_argument("--batches", nargs="+", type=int, help="batch sizes (default: per workload)")
    ap.add_argument("--libraries", nargs="+", choices=list(LIBRARIES), metavar="NAME",
                    help="libraries to time (default: all but cvxpylayers-dense)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed repeats (at least 5; fast cases get more, see timing.py)")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for torch and BLAS (default 1; 0 leaves the "
                         "libraries' defaults). On a shared 2-core machine OpenMP spin-waits "
                         "made qpth's small batched matmuls swing between 6 and 600 ms.")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the gradient-accuracy check")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    ap.add_argument("--report-only", type=Path, metavar="JSON",
                    help="only rebuild the chart and tables from a results.json")
    return ap.parse_args(argv)


def _say(*parts: Any) -> None:
    print(*parts, flush=True)


def _config(w: Workload) -> Config:
    return Config(EPS.get(w.name, DEFAULT_EPS), MAX_ITERS)


def _compile_times(w: Workload, name: str, cfg: Config, repeats: int):
    """Compile on freshly built problems (cvxpy caches canonicalisation on a problem object);
    one untimed warm-up absorbs imports. Returns the last compiled layer and the timing."""
    lib = LIBRARIES[name]
    fname = lib.formulation(w)
    lib.compile(w.build()[fname], cfg)
    samples, compiled = [], None
    for _ in range(max(repeats, 5)):
        form = w.build()[fname]
        start = time.perf_counter()
        compiled = lib.compile(form, cfg)
        samples.append(time.perf_counter() - start)
    return compiled, Timing(tuple(samples))


def run_workload(w: Workload, libraries: list[str], accuracy_libraries: list[str],
                 batches: tuple[int, ...], repeats: int, check_accuracy: bool,
                 results: dict[str, list]) -> None:
    cfg = _config(w)
    _say(f"\n== {w.name}: {w.description}  [SCS eps {cfg.eps:g}]")
    compiled: dict[str, Any] = {}
    for name in dict.fromkeys(libraries + accuracy_libraries):
        lib = LIBRARIES[name]
        why = lib.available()
        if why is None and all(lib.unsupported(w, b) for b in (1, *batches)):
            why = lib.unsupported(w, 1)
        if why:
            results["skipped"].append({"workload": w.name, "library": name, "batch": None,
                                       "reason": why})
            _say(f"  {name:18s} skipped: {why}")
            continue
        try:
            compiled[name], t = _compile_times(w, name, cfg, repeats)
        except Exception as err:  # noqa: BLE001 -- a library that cannot compile it is a result
            results["skipped"].append({"workload": w.name, "library": name, "batch": None,
                                       "reason": f"compile failed: {type(err).__name__}: {err}"})
            _say(f"  {name:18s} compile failed: {err}")
            continue
        results["timings"].append({"workload": w.name, "library": name, "batch": None,
                                   "metric": "compile", **t.as_dict()})
        _say(f"  {name:18s} compile {1e3 * t.median:9.1f} ms")

    if check_accuracy:
        _accuracy(w, compiled, results)

    for batch in batches:
        draws = [w.values(batch, draw) for draw in range(DRAWS)]
        rounds: dict[str, list[Round]] = {}
        heavy = HEAVY.get((w.name, batch))
        for name in libraries:
            if name not in compiled:
                continue
            lib = LIBRARIES[name]
            why = lib.unsupported(w, batch)
            if heavy is not None and name not in heavy:
                why = "left out of this slow case to keep the default run within its budget"
            if why:
                results["skipped"].append({"workload": w.name, "library": name,
                                           "batch": batch, "reason": why})
                continue
            form = w.formulations()[lib.formulation(w)]
            cot = np.random.default_rng(w.seed + 7).standard_normal((batch, *form.output.shape))
            r = _rounds(w, name, compiled[name], [d[lib.formulation(w)] for d in draws], cot,
                        batch, results, warm=heavy is None)
            if r:
                rounds[name] = r
        # The training loops are interleaved among themselves and the Jacobians after them: a
        # Jacobian (psd_proj's: 0.2 s) leaves the caches cold for whichever loop follows it,
        # and that library's backward then measured 1.4x its own (psd_proj@1, torch layer).
        loops = {name: r[:1] for name, r in rounds.items()}
        after = {name: r[1:] for name, r in rounds.items() if r[1:]}
        timed = interleave(loops, repeats, warmup=0)  # warmed up above
        for name, extra in (interleave(after, repeats, warmup=0) if after else {}).items():
            timed[name].update(extra)
        for name, timings in timed.items():
            row = {"workload": w.name, "library": name, "batch": batch}
            for metric, t in timings.items():
                results["timings"].append({**row, "metric": metric, **t.as_dict()})
            shown = "  ".join(f"{m} {1e3 * t.median:9.2f}" for m, t in timings.items())
            _say(f"  B={batch:<4d} {name:18s} ms: {shown}")


def _rounds(w: Workload, name: str, c, draws: list, cot, batch: int,
            results: dict[str, list], warm: bool = True) -> list[Round]:
    """The timed rounds of one library at one batch size, after one untimed warm-up of each
    (a library that fails here is reported and left out). Successive calls cycle through
    the draws of parameter values: a layer that keeps solver state across calls (SCS's
    workspace when A and P are constant) must not meet the data it has just solved."""
    row = {"workload": w.name, "library": name, "batch": batch}
    try:
        prepared = [c.prepare(values, cot) for values in draws]
        cot_in = prepared[0][1]
        cycle = itertools.cycle([inputs for inputs, _ in prepared])
        backward = (lambda state: c.backward(state, cot_in)) if c.backward else None
        out: list[Round] = [TrainingLoop(lambda: c.forward(next(cycle)), backward)]
        if c.jacobian is not None and batch in JACOBIAN_BATCHES:
            why = jacobian_unsupported(w, batch)
            if why is None:
                out.append(after_round("jacobian", lambda: c.forward(next(cycle)), c.jacobian))
            else:
                results["skipped"].append({**row, "reason": f"jacobian: {why}"})
        if warm:
            for r in out:  # the warm-up; a training loop also picks its number of steps
                release_memory()
                r.calibrate() if isinstance(r, TrainingLoop) else r()
        return out
    except Exception as err:  # noqa: BLE001 -- report the failure, time the others
        traceback.print_exc()
        results["skipped"].append({**row, "reason": f"failed: {type(err).__name__}: {err}"})
        _say(f"  B={batch:<4d} {name:18s} FAILED: {err}")
        return []


def _accuracy(w: Workload, compiled: dict[str, Any], results: dict[str, list]) -> None:
    refs: dict[str, accuracy.Reference] = {}
    for name, c in compiled.items():
        fname = LIBRARIES[name].formulation(w)
        form = w.formulations()[fname]
        probe = accuracy.make_probe(w, fname)
        try:
            if fname not in refs:
                refs[fname] = accuracy.reference(form, probe)
            errs = accuracy.library_errors(c, form, probe, refs[fname])
        except Exception as err:  # noqa: BLE001 -- report the failure, check the others
            results["skipped"].append({"workload": w.name, "library": name, "batch": 1,
                                       "reason": f"accuracy failed: {type(err).__name__}: {err}"})
            _say(f"  accuracy {name:18s} FAILED: {err}")
            continue
        rec = {"workload": w.name, "library": name, "formulation": fname,
               "reference_vs_fd": refs[fname].self_error, **errs}
        results["accuracy"].append(rec)
        _say(f"  accuracy {name:18s} " + "  ".join(
            f"{k} {v:.1e}" for k, v in rec.items() if isinstance(v, float)))


def _limit_threads(n: int) -> None:
    if n <= 0:
        return
    import threadpoolctl

    threadpoolctl.threadpool_limits(n)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    if args.report_only is not None:
        results = json.loads(args.report_only.read_text())
        report.write(results, args.out, readme=None if args.no_readme else report.README)
        _say(report.summary(results))
        return results
    _limit_threads(args.threads)
    names = args.workloads or (list(QUICK_WORKLOADS) if args.quick else list(WORKLOADS))
    timed = args.libraries or [n for n, lib in LIBRARIES.items() if lib.timed_by_default]
    accuracy_only = [n for n in LIBRARIES if n not in timed]
    results: dict[str, Any] = {"timings": [], "accuracy": [], "skipped": [],
                               "config": {"repeats": max(args.repeats, 5), "quick": args.quick,
                                          "threads": args.threads,
                                          "eps": {w: EPS.get(w, DEFAULT_EPS) for w in names},
                                          "max_iters": MAX_ITERS},
                               "load_before": os.getloadavg(),
                               "machine": report.machine()}  # the code as imported now
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in names:
            w = WORKLOADS[name]
            batches = tuple(args.batches or (w.quick_batches if args.quick else w.batches))
            run_workload(w, timed, accuracy_only, batches, args.repeats, not args.no_accuracy,
                         results)
    results["load_after"] = os.getloadavg()
    results["wall_seconds"] = time.perf_counter() - start
    report.write(results, args.out, readme=None if args.no_readme else report.README)
    _say("\n" + report.summary(results))
    _say(f"\nwrote {args.out}/results.json, results.png"
         + ("" if args.no_readme else f" and {report.README}")
         + f" in {results['wall_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
