"""Which batches take the dense QP route (:mod:`.dense_qp`), and its answers as RawSolutions.

The route is chosen automatically, never by a flag: a program whose cones are zero and
non-negative only (an LP or a QP), small enough for dense stacks, in a batch large enough
that one batched interior-point run beats a conic solve per element, with solver settings
the route can honour and no warm start. Everything else (other cones, larger programs,
small batches, settings such as ``max_iters=5`` or ``time_limit_secs`` that ask for the
conic solver's own behaviour) keeps the conic path. An element the route does not solve
to its tolerance (infeasible, unbounded, stalled) is returned as None: the caller solves
it on the conic solver, which gives it the status and error it would always have had.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ..cones import ConeDims
from .backends import RawSolution, Status
from .dense_qp import MAX_ITERATIONS, DenseBatch, dense_batch, solve_batch

FloatArray = npt.NDArray[np.float64]

#: Programs with n + m above this keep the conic path (dense stacks grow as B·(n + m)²).
#: Measured (see benchmarks/README.md, "dense QP route"): qp200 (n + m = 350) ... .
MAX_ORDER = 400
#: Batches below this keep the conic path: one batched run's fixed cost (a dozen
#: iterations of numpy calls) is not repaid by few elements. Measured ... .
MIN_BATCH = 8
#: The loosest tolerance a user may ask for that the route still meets: it solves to
#: dense_qp.TOLERANCE (relative) whatever is asked, so a tighter request is the conic
#: solver's to honour.
MIN_EPS = 1e-10
#: solver_args the route honours: tolerances (it solves at least as tightly), iteration
#: limits it never reaches, and verbose=False. Any other setting declines the route.
TOLERANCE_KEYS = frozenset({"eps", "eps_abs", "eps_rel", "tol_gap_abs", "tol_gap_rel",
                            "tol_feas"})
ITERATION_KEYS = frozenset({"max_iters", "max_iter"})
SOLVER_STATUS = "solved (batched dense interior point)"


def honours(solver_args: Mapping[str, Any]) -> bool:
    """Whether the user's solver settings leave the route free to solve (see module)."""
    for key, value in solver_args.items():
        if key in TOLERANCE_KEYS:
            if not _number(value) or value < MIN_EPS:
                return False
        elif key in ITERATION_KEYS:
            if not _number(value) or value < MAX_ITERATIONS:
                return False
        elif not (key == "verbose" and not value):
            return False
    return True


def accepts(cones: ConeDims, n: int, m: int, batch: int) -> bool:
    """Whether a program of these cones and sizes, at this batch size, takes the route."""
    only_linear = not (cones.soc or cones.psd or cones.exp or cones.exp_dual or cones.power)
    return only_linear and n + m <= MAX_ORDER and batch >= MIN_BATCH


def assemble(patterns: tuple[npt.NDArray, ...], data: tuple[FloatArray, ...], n: int,
             cones: ConeDims, size: int) -> DenseBatch:
    """The batch's data (P upper, A, b, c columns) as dense stacks."""
    P_rows, P_cols, A_rows, A_cols = patterns
    P_data, A_data, b, c = data
    return dense_batch(P_data, P_rows, P_cols, A_data, A_rows, A_cols, b, c, n, cones, size)


def solve(batch: DenseBatch) -> list[RawSolution | None]:
    """Solve every element; None for one the conic solver must take over."""
    result = solve_batch(batch)
    share = result.seconds / max(batch.size, 1)
    return [RawSolution(result.x[k], result.y[k], result.s[k], Status.OPTIMAL, SOLVER_STATUS,
                        int(result.iterations[k]), share) if result.converged[k] else None
            for k in range(batch.size)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
