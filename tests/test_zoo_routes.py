"""Every route of the derivative is reached by a case of the generated zoo, and that case is
judged correct by the zoo's oracles (CVXPY's solve, finite differences through two solvers):
"every fast path is covered by the zoo" as a checked property, not a count made once. Each
route's entry point is wrapped while one zoo case runs; a route that a change of threshold
or structure stops reaching fails here, as does a wrong answer on it.

The cases were found by wrapping the same entry points over the whole zoo (2026-12-06);
``tests/test_routes.py`` checks the same routes on larger problems against the dense mode.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from zoo_cases import cases
from zoo_oracles import run_case

from dpplayers import _lapack
from dpplayers._derivative import (
    banded,
    batch,
    bordered,
    elimination,
    lifted_direct,
    linear_solvers,
    pair_pivots,
    qp_elements,
    tiles,
)
from dpplayers._solve import qp_route, qp_systems
from dpplayers.cones import _exponential as exponential
from dpplayers.cones import _operators as operators

CASES = {c.id: c for c in cases()}


def _wrap(monkeypatch, hits: Counter, owner, name: str, route: str,
          when: Callable[..., bool] = lambda *a, **k: True) -> None:
    """Count a call of ``owner.name`` as reaching ``route`` where ``when(args, result)``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def counted(*args, **kwargs):
        out = original(*args, **kwargs)
        if when(args, out):
            hits[route] += 1
        return out

    monkeypatch.setattr(owner, name, counted)


def _instrument(monkeypatch) -> Counter:
    hits: Counter = Counter()
    w = functools.partial(_wrap, monkeypatch, hits)
    w(batch.DenseBatch, "solve", "batched dense solve", lambda a, o: a[0].drop is None)
    w(batch.DenseBatch, "solve", "inactive rows compacted", lambda a, o: a[0].drop is not None)
    w(pair_pivots, "_solve_reduced", "diagonal pivots", lambda a, o: a[2] > 0)
    w(pair_pivots, "_solve_reduced", "lifted SOC rows divided out",
      lambda a, o: len(a) > 4 and a[4] is not None and a[4] < a[0].shape[1] - a[2])
    w(pair_pivots, "_solve_reduced", "pivot update by rows of one entry",
      lambda a, o: len(a) > 5 and a[5] is not None and a[5].rows)
    w(pair_pivots, "_solve_reduced", "pivot update by columns of one entry",
      lambda a, o: len(a) > 5 and a[5] is not None and not a[5].rows)
    w(pair_pivots, "_solve_split", "bound rows divided out after the variables")
    w(lifted_direct, "lifted_operator", "lifted J in Direct")
    w(pair_pivots, "_solve_one", "dense LU per element")
    w(pair_pivots, "_within", "suspect LU kept by its gecon estimate", lambda a, o: o)
    w(linear_solvers._AntiDiagonalLU, "__init__", "LP basis LU")
    w(linear_solvers.SparseLU, "__init__", "SuperLU")
    w(linear_solvers.DenseLU, "__init__", "single-precision LU", lambda a, o: a[0].single)
    w(elimination.PairElimination, "of", "pair elimination in Direct",
      lambda a, o: o is not None and not isinstance(o[1], np.ndarray))
    w(elimination.PairElimination, "of", "pair elimination in Direct, dense S",
      lambda a, o: o is not None and isinstance(o[1], np.ndarray))
    w(linear_solvers, "free_auxiliaries", "free auxiliaries left out", lambda a, o: o is not a[1])
    w(batch.BatchDerivative, "_free_auxiliaries", "free auxiliaries dropped in the batch",
      lambda a, o: o is not None)
    w(linear_solvers.TruncatedInverse, "__init__", "minimum-norm answer")
    w(bordered.BorderedFactor, "__init__", "bordered LU")
    w(qp_route, "solve", "dense QP route")
    w(_lapack, "potrf", "dense QP route's Cholesky by LAPACK per element")
    w(qp_systems.Equalities, "of", "dense QP route's equalities by LAPACK per element",
      lambda a, o: o is not None and a[1] >= qp_systems.LOOP_MIN_ORDER)
    w(qp_elements.RouteElements, "solve", "dense QP route's kept factors", lambda a, o: len(o) > 0)
    w(operators, "_sum_over", "PSD derivative over the fewer columns")
    w(tiles.TileFill, "write", "D's blocks written as tiles")
    w(exponential, "exp_dproject_rows", "exponential DPi row by row", lambda a, o: o is not None)
    w(banded.BandLayout, "solve", "band LU", lambda a, o: bool((o[1] <= batch.BATCH_RESIDUAL_TOL).any()))
    w(banded.BandLayout, "solve", "band LU with a dense border",
      lambda a, o: a[0].border > 0 and bool((o[1] <= batch.BATCH_RESIDUAL_TOL).any()))
    w(banded.BandLayout, "solve", "band LU declines a singular J",
      lambda a, o: bool((o[1] == np.inf).any()))
    return hits


#: route -> a zoo case (a CI-sample seed where one reaches it) that reaches it
ROUTE_CASES = {
    "batched dense solve": "abs-0",
    "dense LU per element": "abs-2",
    "suspect LU kept by its gecon estimate": "abs_box-0",
    "inactive rows compacted": "lasso_box-0",
    "diagonal pivots": "soc_projection_large-0",
    "LP basis LU": "lp_medium-0",
    "SuperLU": "medium_mixed-0",
    "pair elimination in Direct": "medium_mixed-0",
    "pair elimination in Direct, dense S": "lasso_box-0",
    "single-precision LU": "lp_filled_basis-0",
    "free auxiliaries left out": "abs_box_large-0",
    "free auxiliaries dropped in the batch": "abs_box-0",
    "minimum-norm answer": "con_redundant-0",
    "bordered LU": "logistic_fit-0",
    "dense QP route": "qp_route_dense-0",
    "lifted SOC rows divided out": "soc_norm_large-0",
    "lifted J in Direct": "soc_norm_huge-0",
    "dense QP route's kept factors": "qp_route_dense-0",
    "dense QP route's Cholesky by LAPACK per element": "qp_route_dense-0",
    "dense QP route's equalities by LAPACK per element": "qp_route_equalities-0",
    "PSD derivative over the fewer columns": "psd_projection_large-0",
    "D's blocks written as tiles": "psd_tiles-0",
    "pivot update by rows of one entry": "psd_projection_large-0",
    "pivot update by columns of one entry": "psd_projection_large-0",
    "bound rows divided out after the variables": "simplex_projection-2",
    "exponential DPi row by row": "gp_box-0",
    "band LU": "tv_denoise-0",
    "band LU with a dense border": "logistic_fit-0",
    "band LU declines a singular J": "mpc_repeated_x0-0",
}


@pytest.mark.parametrize("route", list(ROUTE_CASES))
def test_a_zoo_case_reaches_the_route_and_is_correct(route, monkeypatch):
    hits = _instrument(monkeypatch)
    outcome = run_case(CASES[ROUTE_CASES[route]])
    assert outcome.passed, f"{outcome.kind}: {outcome.detail}"
    assert hits[route] > 0, f"{ROUTE_CASES[route]} no longer reaches {route!r}: {dict(hits)}"
