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

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ..cones import ConeDims
from .backends import RawSolution, Status
from .dense_qp import MAX_ITERATIONS, solve_batch
from .qp_systems import DenseBatch, dense_batch

FloatArray = npt.NDArray[np.float64]

#: The route takes programs with MIN_ORDER <= n + m <= MAX_ORDER whose A and P are at least
#: MIN_FILL full (nonzeros of A and of P's upper triangle over m·n, + n(n+1)/2 with a P), in
#: batches of at least MIN_BATCH. Measured with benchmarks/qp_route.py (forward, the route
#: forced against the conic path on SCS at 1e-8; table in benchmarks/README.md, "QP layers
#: against qpth"): dense OptNet QPs of n + m = 15 and 34 lose at batches 8-16 (0.6-0.7×: a
#: dozen iterations of numpy calls cost more than SCS on a tiny problem), n + m = 85 (qp50)
#: wins from batch 8 on that loaded machine (1.4×, 2.0× at 32) but, measured again on a quiet
#: one (``benchmarks/ab.py --base 6a3eeed --batches 8 16 32 --workloads qp50``, forward,
#: route against the conic path on two threads), loses at 8 and 16 (1.13×, 1.28× slower) and
#: wins only from 32 (0.84×), hence MIN_BATCH = 32; the LP with 200 dense halfspaces (n + m = 260,
#: fill 0.84) 1.2-1.4×, while sparse programs lose to SCS's sparse factorisation: an
#: equality-constrained least squares (n + m = 170, fill 0.16) 0.2-0.3×, an MPC (n + m =
#: 288, fill 0.03) 0.25-0.3×. MAX_ORDER was 400, and past it dense OptNet QPs fell off a
#: cliff (2026-12-07, batch 32, forward and backward, conic path against the route): n + m =
#: 600 1.66 s and 0.50-0.62 s against 0.40-0.43 s and 0.09-0.33 s; 900 5.3 and 2.3-2.4 s
#: against 0.93-0.95 and 0.24-0.73 s; 1,200 12.3 and 4.9 s against 1.8 and 1.3 s; 1,500 27-29
#: and 7.2-8.2 s against 3.0-3.4 and 0.6-2.4 s. The route's dense stacks, B·(n + m)² in
#: all, take less memory than the conic path's dense derivatives (900: peak 0.54 against
#: 1.03 GB). It now stops where the derivative stops factorising densely
#: (``_derivative.plan.DENSE_MAX_ORDER``).
MIN_ORDER = 60
MAX_ORDER = 1500
MIN_FILL = 0.5
MIN_BATCH = 32
#: A batch is split into chunks of about CHUNK_BYTES of dense data each (P, A, P⁻¹Aᵀ,
#: A P⁻¹Aᵀ: every iteration streams them), which run side by side on the thread pool; a
#: batch smaller than that is one chunk. Larger chunks pay fewer numpy calls per element;
#: too few leave a core idle. Measured (2026-12-07, one BLAS thread, the route's LAPACK
#: calls releasing the GIL, forward, medians of 12), chunks of 4 / 8 / 16 / 32 MB: qp200 at
#: batch 32 (31 MB) 153 / 126-128 / 110-111 / 149 ms (one chunk at 32: one core), at 128
#: 572 / 507-515 / 441-459 / 427 ms; the LP with 200 halfspaces at 32 45.1 / 39.6 / 50.3 ms
#: (8 / 16 / 32), at 128 163 / 155 / 167; qp50 at 128 (7.4 MB) 44.1 / 37.3 / 37.5 (two
#: threads trading the GIL between its small elements' many calls cost more than they
#: share: at least one chunk per worker, as before, made it 41.9 ms against 31.6 in one).
CHUNK_BYTES = 16 << 20
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


def accepts(cones: ConeDims, n: int, m: int, nnz_A: int, nnz_P: int | None,
            batch: int) -> bool:
    """Whether a program of these cones and sizes, with ``nnz_A`` nonzeros in A and
    ``nnz_P`` in P's upper triangle (None: no P), takes the route at this batch size."""
    only_linear = not (cones.soc or cones.psd or cones.exp or cones.exp_dual or cones.power)
    dense = m * n + (n * (n + 1) // 2 if nnz_P is not None else 0)
    return (only_linear and MIN_ORDER <= n + m <= MAX_ORDER and batch >= MIN_BATCH
            and nnz_A + (nnz_P or 0) >= MIN_FILL * dense)


def chunks(n: int, m: int, batch: int) -> list[slice]:
    """The batch's elements in runs of about CHUNK_BYTES (see there)."""
    per_element = 8 * (n * n + 2 * m * n + m * m)
    count = max(1, min(batch, -(-batch * per_element // CHUNK_BYTES)))
    bounds = np.linspace(0, batch, count + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def assemble(patterns: tuple[npt.NDArray, ...], data: tuple[FloatArray, ...], n: int,
             cones: ConeDims, elements: slice) -> DenseBatch:
    """The data of a run of the batch's elements (P upper, A, b, c columns: B or 1, the
    latter shared) as dense stacks. Each chunk assembles its own on its thread: the batch's
    whole stacks, sliced after, were one more copy of them (qp200 at 32: 31 MB)."""
    P_rows, P_cols, A_rows, A_cols = patterns
    P_data, A_data, b, c = (col if col.shape[1] == 1 else col[:, elements] for col in data)
    size = elements.stop - elements.start
    return dense_batch(P_data, P_rows, P_cols, A_data, A_rows, A_cols, b, c, n, cones, size)


def solve(batch: DenseBatch) -> list[RawSolution | None]:
    """Solve every element; None for one the conic solver must take over."""
    result = solve_batch(batch)
    share = result.seconds / max(batch.size, 1)
    factors = result.factors
    return [RawSolution(result.x[k], result.y[k], result.s[k], Status.OPTIMAL, SOLVER_STATUS,
                        int(result.iterations[k]), share,
                        kept=None if factors is None else (factors, k))
            if result.converged[k] else None for k in range(batch.size)]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
