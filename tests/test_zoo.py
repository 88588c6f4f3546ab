"""The generated differential test zoo (issue #17): every case correct or refused by name.

Cases come from ``zoo_cases`` (seeded, stable ids ``<family>-<seed>``), judgements from
``zoo_oracles`` (CVXPY's solve, finite differences through two solvers, the dot-product
identity, ``jacobian()``). Two seeds of every family (0 and 2, or 1 and 3, alternately) run
by default; the rest are ``slow`` (``RUN_SLOW=1``). ``KNOWN_FAILING`` lists cases failing
today (none), with a one-word class each; they are ``xfail(strict=True)`` so a fix shows up
as an unexpected pass.
A case depends only on its id (family name and seed), not on the order of the families.

Summary table (per family: correct / refused / crash / wrong value / wrong derivative):

    python tests/test_zoo.py --summary [--family F ...] [--all] [--failures]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict

if __name__ == "__main__":  # run as a script: import this checkout, not an installed copy
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [os.path.dirname(here), here]

import pytest
from zoo_cases import cases
from zoo_oracles import KINDS, Outcome, run_case

from dpplayers._solve import qp_route

#: case id -> failure class of cases that fail today, each marked xfail(strict=True) so a fix
#: shows up as an unexpected pass. Empty: every issue #17 class found by the zoo (items 1-18,
#: the duplicate parameter and the empty batch) is fixed; add an entry only with an open issue.
KNOWN_FAILING: dict[str, str] = {}

CASES = cases()


def _param(case):
    marks = []
    if not case.ci:
        marks.append(pytest.mark.slow)
    if case.id in KNOWN_FAILING:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILING[case.id]))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_zoo_case(case):
    outcome = run_case(case)
    assert outcome.passed, f"{outcome.kind}: {outcome.detail}"


def test_zoo_is_large_and_stable():
    """≥ 400 generated cases with unique ids, and the CI sample covers every family."""
    ids = [c.id for c in CASES]
    assert len(ids) >= 400 and len(set(ids)) == len(ids)
    assert {c.family.name for c in CASES if c.ci} == {c.family.name for c in CASES}
    assert set(KNOWN_FAILING) <= set(ids)


@pytest.mark.parametrize("name", ["qp_route_dense", "lp_route_dense",
                                  "qp_route_duplicated_rows"])
def test_zoo_reaches_the_dense_qp_route(name, monkeypatch):
    """The LP/QP families built for the dense QP route are solved by it, with no constant
    lowered, and are correct there."""
    solved = []
    solve = qp_route.solve

    def counting(batch):
        out = solve(batch)
        solved.append(sum(raw is not None for raw in out))
        return out

    monkeypatch.setattr(qp_route, "solve", counting)
    case = next(c for c in CASES if c.family.name == name and c.batch == "route")
    outcome = run_case(case)
    assert outcome.passed, f"{outcome.kind}: {outcome.detail}"
    assert sum(solved) >= qp_route.MIN_BATCH


@pytest.mark.parametrize("plant", ["value", "jvp", "vjp"])
def test_zoo_oracles_catch_a_planted_error(plant, monkeypatch):
    """The oracles are not vacuous: a 1% error planted in dpplayers' values, jvp or vjp turns
    a correct case into a wrong one."""
    import dataclasses

    import dpplayers._program
    import dpplayers._solution

    case = next(c for c in CASES if c.id == "sum_squares-0")
    assert run_case(case).kind == "correct"
    if plant == "value":
        solve = dpplayers._program.CompiledProblem.solve

        def off(self, *a, **k):
            sol = solve(self, *a, **k)
            return dataclasses.replace(sol, values=tuple(1.01 * v for v in sol.values))

        monkeypatch.setattr(dpplayers._program.CompiledProblem, "solve", off)
    else:
        method = getattr(dpplayers._solution.Solution, plant)
        monkeypatch.setattr(dpplayers._solution.Solution, plant,
                            lambda self, *a: tuple(1.01 * g for g in method(self, *a)))
    outcome = run_case(case)
    assert outcome.kind == ("wrong_value" if plant == "value" else "wrong_derivative"), outcome


# ------------------------------------------------------------------ the summary CLI

COLUMNS = ("correct", "degenerate", "refused", "inconclusive", "crash", "wrong_value",
           "wrong_derivative")


def summarise(outcomes: list[Outcome]) -> str:
    by_family: dict[str, Counter] = defaultdict(Counter)
    seconds: Counter = Counter()
    for o in outcomes:
        by_family[o.family][o.kind] += 1
        seconds[o.family] += o.seconds
    short = {"wrong_value": "wrong_val", "wrong_derivative": "wrong_der",
             "inconclusive": "inconcl", "degenerate": "degen"}
    heads = [short.get(c, c) for c in COLUMNS]
    lines = [f"{'family':<30}{'cases':>6}" + "".join(f"{h:>10}" for h in heads) + f"{'sec':>8}"]
    total: Counter = Counter()
    for fam, counts in by_family.items():
        total.update(counts)
        n = sum(counts.values())
        lines.append(f"{fam:<30}{n:>6}" + "".join(f"{counts[c] or '.':>10}" for c in COLUMNS)
                     + f"{seconds[fam]:>8.1f}")
    n = sum(total.values())
    lines.append(f"{'TOTAL':<30}{n:>6}" + "".join(f"{total[c]:>10}" for c in COLUMNS)
                 + f"{sum(seconds.values()):>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", action="store_true", help="print the per-family table")
    parser.add_argument("--family", nargs="*", default=[], help="only these families")
    parser.add_argument("--all", action="store_true", help="every seed (default: CI sample)")
    parser.add_argument("--failures", action="store_true",
                        help="list every case that is not correct, with its detail")
    args = parser.parse_args(argv)
    selected = [c for c in CASES if (args.all or c.ci)
                and (not args.family or c.family.name in args.family)]
    start = time.perf_counter()
    outcomes = []
    for case in selected:
        outcome = run_case(case)
        outcomes.append(outcome)
        if args.failures and outcome.kind != "correct":
            print(f"{outcome.case_id:<34}{case.batch:<6}{case.mode:<7}{outcome.kind:<17}"
                  f"{outcome.detail}", flush=True)
            for other in outcome.others:
                print(f"{'':<47}also {other}", flush=True)
    print(summarise(outcomes))
    print(f"{len(outcomes)} cases in {time.perf_counter() - start:.1f} s")
    failing = [o for o in outcomes if not o.passed]
    print(f"failing: {len(failing)}  " + " ".join(
        f"{k}={sum(o.kind == k for o in failing)}" for k in KINDS if k in
        {o.kind for o in failing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
