"""The generated differential test zoo (issue #17): every case correct or refused by name.

Cases come from ``zoo_cases`` (seeded, stable ids ``<family>-<seed>``), judgements from
``zoo_oracles`` (CVXPY's solve, finite differences through two solvers, the dot-product
identity, ``jacobian()``). Two seeds of every family (0 and 2, or 1 and 3, alternately) run
by default; the rest are ``slow`` (``RUN_SLOW=1``). ``KNOWN_FAILING`` lists the cases failing
on the code this zoo was built against, with a one-word class each; they are
``xfail(strict=True)`` so a fix shows up as an unexpected pass: empty the set as fixes land.
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

#: case id -> failure class (issue #17 item) on main at 6a3eeed, from
#: `python tests/test_zoo.py --summary --all --failures`; delete entries as fixes land.
KNOWN_FAILING: dict[str, str] = {
    "quad_form_const-0": "frozen-parameter (#3)",
    "quad_form_const-2": "frozen-parameter (#3)",
    "quad_form_const-4": "frozen-parameter (#3)",
    "quad_form_param_unconstrained-0": "no-constraints (#8)",
    "quad_form_param_unconstrained-1": "no-constraints (#8)",
    "quad_form_param_unconstrained-2": "no-constraints (#8)",
    "quad_form_param_unconstrained-3": "no-constraints (#8)",
    "quad_form_param_unconstrained-4": "no-constraints (#8)",
    "quad_form_param_unconstrained-5": "no-constraints (#8)",
    "lambda_sum_largest-0": "degenerate-unflagged (#5)",
    "lambda_sum_largest-2": "degenerate-unflagged (#5)",
    "lambda_sum_largest-4": "degenerate-unflagged (#5)",
    "log_det-0": "chordal (#9)",
    "log_det-1": "chordal (#9)",
    "log_det-2": "chordal (#9)",
    "log_det-3": "chordal (#9)",
    "log_det-4": "chordal (#9)",
    "log_det-5": "chordal (#9)",
    "matrix_frac-0": "frozen-parameter (#3)",
    "matrix_frac-1": "frozen-parameter (#3)",
    "matrix_frac-2": "frozen-parameter (#3)",
    "tr_inv-4": "chordal (#9)",
    "con_eq_fixed-0": "empty-elimination (#7)",
    "con_eq_fixed-2": "empty-elimination (#7)",
    "con_eq_fixed-4": "empty-elimination (#7)",
    "var_nonpos-0": "attribute-projection (#1)",
    "var_nonpos-1": "attribute-projection (#1)",
    "var_nonpos-2": "attribute-projection (#1)",
    "var_nonpos-3": "attribute-projection (#1)",
    "var_nonpos-4": "attribute-projection (#1)",
    "var_nonpos-5": "attribute-projection (#1)",
    "var_neg-0": "attribute-projection (#1)",
    "var_neg-1": "attribute-projection (#1)",
    "var_neg-2": "attribute-projection (#1)",
    "var_neg-3": "attribute-projection (#1)",
    "var_neg-4": "attribute-projection (#1)",
    "var_neg-5": "attribute-projection (#1)",
    "var_bounds-0": "attribute-projection (#1)",
    "var_bounds-1": "attribute-projection (#1)",
    "var_bounds-2": "attribute-projection (#1)",
    "var_bounds-3": "attribute-projection (#1)",
    "var_bounds-4": "attribute-projection (#1)",
    "var_bounds-5": "attribute-projection (#1)",
    "var_diag-0": "diag-variable (#10)",
    "var_diag-1": "diag-variable (#10)",
    "var_diag-2": "diag-variable (#10)",
    "var_diag-3": "diag-variable (#10)",
    "var_diag-4": "diag-variable (#10)",
    "var_diag-5": "diag-variable (#10)",
    "var_complex-0": "complex (#4)",
    "var_complex-1": "complex (#4)",
    "var_complex-2": "complex (#4)",
    "var_complex-3": "complex (#4)",
    "var_complex-4": "complex (#4)",
    "var_complex-5": "complex (#4)",
    "var_hermitian-0": "chordal (#9)",
    "var_hermitian-1": "chordal (#9)",
    "var_hermitian-2": "chordal (#9)",
    "var_hermitian-3": "chordal (#9)",
    "var_hermitian-4": "chordal (#9)",
    "var_hermitian-5": "chordal (#9)",
    "param_complex-0": "complex (#4)",
    "param_complex-1": "complex (#4)",
    "param_complex-2": "complex (#4)",
    "param_complex-3": "complex (#4)",
    "param_complex-4": "complex (#4)",
    "param_complex-5": "complex (#4)",
    "gp_exponent_param-0": "gp-exponent (#2)",
    "gp_exponent_param-1": "gp-exponent (#2)",
    "gp_exponent_param-2": "gp-exponent (#2)",
    "gp_exponent_param-3": "gp-exponent (#2)",
    "gp_exponent_param-4": "gp-exponent (#2)",
    "gp_exponent_param-5": "gp-exponent (#2)",
    "refuse_integer-0": "mixed-integer (#12)",
    "refuse_integer-1": "mixed-integer (#12)",
    "refuse_integer-2": "mixed-integer (#12)",
    "refuse_integer-3": "mixed-integer (#12)",
    "refuse_integer-4": "mixed-integer (#12)",
    "refuse_integer-5": "mixed-integer (#12)",
    "empty_batch-0": "empty-batch (new)",
    "empty_batch-1": "empty-batch (new)",
    "empty_batch-2": "empty-batch (new)",
    "empty_batch-3": "empty-batch (new)",
    "empty_batch-4": "empty-batch (new)",
    "empty_batch-5": "empty-batch (new)",
    "refuse_duplicate_parameter-0": "duplicate-parameter (new)",
    "refuse_duplicate_parameter-1": "duplicate-parameter (new)",
    "refuse_duplicate_parameter-2": "duplicate-parameter (new)",
    "refuse_duplicate_parameter-3": "duplicate-parameter (new)",
    "refuse_duplicate_parameter-4": "duplicate-parameter (new)",
    "refuse_duplicate_parameter-5": "duplicate-parameter (new)",
}

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


@pytest.mark.parametrize("plant", ["value", "jvp", "vjp"])
def test_zoo_oracles_catch_a_planted_error(plant, monkeypatch):
    """The oracles are not vacuous: a 1% error planted in dpplayers' values, jvp or vjp turns
    a correct case into a wrong one."""
    import dataclasses

    import dpplayers.compiler
    import dpplayers.solution

    case = next(c for c in CASES if c.id == "sum_squares-0")
    assert run_case(case).kind == "correct"
    if plant == "value":
        solve = dpplayers.compiler.CompiledProblem.solve

        def off(self, *a, **k):
            sol = solve(self, *a, **k)
            return dataclasses.replace(sol, values=tuple(1.01 * v for v in sol.values))

        monkeypatch.setattr(dpplayers.compiler.CompiledProblem, "solve", off)
    else:
        method = getattr(dpplayers.solution.Solution, plant)
        monkeypatch.setattr(dpplayers.solution.Solution, plant,
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
