"""Where dpplayers spends its time: cProfile of the forward and backward passes.

    python benchmarks/profiling.py [--repeats 3] [--no-readme]

Profiles the NumPy API (``prog.solve`` and ``sol.vjp``) at batch 32 on the OptNet QP and
on the exponential-cone workload, and the backward at batch 1 on the sparse LP (where
backward costs most relative to forward). Elements run serially (``n_jobs=1``) so that
cProfile, which sees one thread, sees all the work. Writes results/profile.txt (full
listings) and the summary tables into the PROFILE block of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

import dpplayers
from benchmarks import report
from benchmarks.workloads import WORKLOADS

#: (workload, batch, passes shown, calls per repeat): the QP and the exponential-cone workload
#: at batch 32; the backward of the sparse LP and of the PSD workload (the largest
#: backward/forward ratios); forward at batch 1 on the two workloads whose forward is
#: furthest above bare SCS.
CASES = (("qp50", 32, ("forward", "backward"), 1), ("sigmoid", 32, ("forward", "backward"), 1),
         ("sparse_lp", 1, ("backward",), 1), ("ncm", 32, ("backward",), 1),
         ("qp50", 1, ("forward",), 20), ("ncm", 1, ("forward",), 20))
TOP = 10
BEGIN, END = "<!-- BEGIN PROFILE -->", "<!-- END PROFILE -->"


def _label(key: tuple[str, int, str]) -> str:
    """'module.py:function' for Python code, the built-in's name otherwise."""
    file, _, func = key
    if file == "~":
        return func.replace("<", "").replace(">", "")
    parts = Path(file).parts
    where = "/".join(parts[parts.index("dpplayers"):] if "dpplayers" in parts else parts[-2:])
    return f"{where}:{func}"


def _profile(fn, repeats: int, setup=None) -> tuple[pstats.Stats, float]:
    prof = cProfile.Profile()
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        prof.enable()
        fn(arg)
        prof.disable()
    stats = pstats.Stats(prof)
    return stats, stats.total_tt / repeats


def _table(stats: pstats.Stats, per_call: float, repeats: int) -> list[str]:
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP]
    lines = ["| function | self ms / call | % of total | cumulative ms |", "|---|---:|---:|---:|"]
    for key, (_, _, tt, ct, _) in rows:
        lines.append(f"| `{_label(key)}` | {1e3 * tt / repeats:.3g} | "
                     f"{100 * tt / repeats / per_call:.0f}% | {1e3 * ct / repeats:.3g} |")
    return lines


def _case(name: str, batch: int, repeats: int):
    """Profiles of ``prog.solve`` and of ``sol.vjp`` on fresh draws: (fwd, fwd s, bwd, bwd s)."""
    w = WORKLOADS[name]
    form = w.formulations()["native"]
    prog = dpplayers.compile(form.problem, list(form.parameters), [form.output], gp=form.gp)
    args = {"eps": 1e-8, "n_jobs": 1}
    draws = [w.values(batch, d)["native"] for d in range(repeats + 1)]
    cot = np.random.default_rng(0).standard_normal((batch, *form.output.shape))
    prog.solve(*draws[-1], solver_args=args).vjp(cot)  # warm-up
    fwd_draws, bwd_draws = iter(draws), iter(draws)
    fwd, fwd_t = _profile(lambda v: prog.solve(*v, solver_args=args), repeats,
                          setup=lambda: next(fwd_draws))
    bwd, bwd_t = _profile(lambda sol: sol.vjp(cot), repeats,
                          setup=lambda: prog.solve(*next(bwd_draws), solver_args=args))
    return fwd, fwd_t, bwd, bwd_t


def run(repeats: int) -> tuple[str, str]:
    """(markdown summary, full text listing)."""
    md, full = [], []
    for name, batch, shown, calls in CASES:
        fwd, fwd_t, bwd, bwd_t = _case(name, batch, repeats * calls)
        passes = {"forward": (fwd, fwd_t), "backward": (bwd, bwd_t)}
        for what in shown:
            stats, per_call = passes[what]
            title = (f"{name}, batch {batch}, {what}: {1e3 * per_call:.1f} ms per call "
                     f"({1e3 * per_call / batch:.2f} ms per element), top {TOP} by self time")
            md += [f"**{title}**", "", *_table(stats, per_call, repeats * calls), ""]
            buf = io.StringIO()
            stats.stream = buf
            stats.sort_stats("tottime").print_stats(25)
            full += [f"==== {title}", buf.getvalue()]
        print(f"{name} B={batch}: forward {1e3 * fwd_t:.1f} ms, backward {1e3 * bwd_t:.1f} ms",
              flush=True)
    return "\n".join(md), "\n".join(full)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    summary, listing = run(args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.txt").write_text(listing)
    body = ("## Profile (generated by profiling.py)\n\n"
            f"dpplayers commit {report.machine()['dpplayers_commit']}. cProfile of the NumPy API, elements run serially (`n_jobs=1`), SCS eps 1e-8; "
            f"per-call averages over {args.repeats} calls on fresh parameter draws (cProfile's "
            "own overhead inflates Python-heavy code). "
            "Self time = time in the function itself; C extensions (SCS, SuperLU) appear "
            "as their Python-visible method.\n\n" + summary)
    if not args.no_readme:
        report.replace_block(report.README, BEGIN, END, body)
    print(summary)


if __name__ == "__main__":
    main()
