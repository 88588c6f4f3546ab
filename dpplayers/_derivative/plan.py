"""J's elimination plan: which unknowns are pivoted out before J is factorised, chosen once
per program from J's fixed pattern, and which executor takes an element.

In J = [[P, Aᵀ D], [A, D − I]] these unknowns can be eliminated exactly, in this order:

1. *inactive rows* — an inequality whose 1×1 block of D is 0 at the solution: column n + i
   of J is −e_{n+i} (trail pivot of J, lead of Jᵀ);
2. *bound rows* — a 1×1 block with D_ii = 1 whose row of A holds one entry a·e_j (a bound
   or fixed variable): row n + i is a·e_jᵀ (lead pivot of J, trail of Jᵀ);
3. *2×2 pair pivots* — cvxpy's ``sum_squares`` auxiliaries (:mod:`.pair_pivots`);
4. *S's leading diagonal pivots* — what meets the rest of S only on its diagonal.

The candidates of each kind are read off the pattern here, once; what depends on the
solution (D's 1×1 values, A's entries) is a per-element mask over them. Two executors share
the plan: the sparse one (:class:`~.linear_solvers.Direct`: kinds 1–3 per element, then one
LU of the rest, kept for reuse) and the batched dense one (:class:`~.batch.DenseBatch`:
kinds 1, 3 and 4 over many elements at once, then a dense LU each). Which one an element goes to,
and whether a factorisation is dense, is decided by the constants below. A third executor
eliminates nothing: where J itself is a narrow band matrix in reverse Cuthill–McKee order,
whose band LU costs no more than the batched executor's dense S and LU
(:attr:`EliminationPlan.batched_work`), ``direct`` mode tries it first (:mod:`.banded`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .conditioning import POLYHEDRAL_CONDITION_LIMIT, ConditionLimit
from .elimination import Singletons
from .inactive_rows import InactiveRows
from .pair_pivots import PairPivots

if TYPE_CHECKING:
    from .kkt import KKTOperator
    from .pattern import KKTPattern

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

#: Reduced J up to this order are factorised densely whatever their fill: per element
#: (LAPACK 0.03 ms against SuperLU's 0.25 ms at order 85; SuperLU wins from about 300).
#: In the batched executor (order: its LU's, S less its leading diagonal pivots), a J less
#: than DENSE_FRACTION full whose LU is above this drops each element's inactive rows (and
#: free auxiliaries) first: the MPC's LU of 203, batched without dropping them, was 1.13–1.40×
#: slower (quiet machine, interleaved).
DENSE_ORDER = 200
#: Dense LUs from this order on are computed in single precision and refined in double
#: (:class:`~.linear_solvers.DenseLU`: LAPACK's sgetrf takes about half dgetrf's time, order
#: 1,000 9 ms against 16 ms here; the sparse LP's backward 1.68–1.84× faster, ``routes.py``).
#: Below it every J is batched (after the drops above): its per-element LU would be a dense
#: double one of the same order, one at a time, or a sparse one behind ~1–2 ms of Python
#: and scipy per element. A J at least DENSE_FRACTION full (or whose batched LU's matrix is)
#: drops nothing below this order: compacting its many entries per element cost more than
#: the smaller LU saved (qp200, order 350: backward 1.5–1.65× slower; a norm fit's lifted
#: J̃, LU 203: 1.25–1.4×). Measured (``ab.py``, backward, 15 rounds, 2026-12-07), batching
#: up to this order where the limit for a sparser J was DENSE_ORDER: a p-norm fit (LU 220)
#: 0.88 / 0.82 / 0.50 at batch 1 / 8 / 32, box least squares written ``abs(x) <= c`` at
#: batch 32 (n = 100, 130, 200: LU after the drops 250–450) 0.23, 0.14, 0.13; earlier, a
#: full OptNet QP of order 450 batched against per element: 0.69 / 0.95 / 0.75.
MIXED_MIN_ORDER = 500
#: A J (or a sparse LU's factors) at least this full is factorised densely up to
#: DENSE_MAX_ORDER: SuperLU's fill approaches dense anyway (200-variable QP, order 297 and
#: 89% full: LAPACK 0.5 ms, SuperLU 1.7 ms; the sparse LP's basis, order 1,000 with 1% random
#: entries, fills to 61%: SuperLU 41 ms against LAPACK's 14 ms).
DENSE_FRACTION = 0.25
#: The largest J handled as a dense matrix at all: a dense LU by fill, or the truncated SVD
#: of a singular J (order 1,500: ~1.5 s for the SVD; beyond, LSMR's minimum-norm answer).
DENSE_MAX_ORDER = 1500


@dataclass(frozen=True, eq=False)
class EliminationPlan:
    """The static pivot order of one program's J (see the module's docstring)."""

    n: int
    m: int
    size: int  # J's order (J̃'s, lifted)
    scalar_rows: Index  # rows of A whose D block is 1×1 ...
    scalar_d: Index  # ... and where their D value is in ``block_values`` order
    bound_rows: Index  # rows of A with a 1×1 D block and one entry, in A's data order: ...
    bound_cols: Index  # ... that entry's column ...
    bound_src: Index  # ... and its position in A's data
    bound_d: Index  # the row's D value's position in ``block_values`` order
    pairs: PairPivots
    inactive: InactiveRows | None  # the batched executor's per-element dropped rows
    full: bool  # J's pattern, or its batched LU's (:func:`_full`), is at least DENSE_FRACTION full
    #: per block kind ("core", "basis"): a sparse LU of this program's J filled in so much
    #: that later elements factorise it densely (set by ``Direct``)
    filled: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, pattern: KKTPattern) -> EliminationPlan:
        n, m, size = pattern.n, pattern.m, pattern.size
        scalar_rows, scalar_d = pattern.scalar_rows, pattern.scalar_d
        # A's entries are J's at (n + i, j), j < n (in J's own order: a pattern may permute)
        a_rows, a_cols = (x[pattern.a_entries] for x in (pattern.entry_rows, pattern.entry_cols))
        if pattern.order is not None:
            a_rows, a_cols = pattern.order[a_rows], pattern.order[a_cols]
        a_rows = a_rows - n
        d_of_row = np.full(m, -1)
        d_of_row[scalar_rows] = scalar_d
        lone = (np.bincount(a_rows, minlength=m) == 1) & (d_of_row >= 0)
        src = np.flatnonzero(lone[a_rows])
        src = src[np.lexsort((a_rows[src], a_cols[src]))]  # by column, then row
        variables, equalities = np.zeros(size, bool), np.zeros(size, bool)
        variables[pattern.at(np.arange(n))] = True
        equalities[pattern.at(n + np.arange(pattern.zero_rows))] = True
        diagonal = variables.copy()
        diagonal[: pattern.leading] = True  # and J̃'s lifted rows, where they come first
        pairs = PairPivots.of(size, pattern.entry_rows, pattern.entry_cols, variables,
                              equalities, diagonal)
        if scalar_rows.size == m:  # polyhedral: the batched LU judges its suspects by gecon
            limit = POLYHEDRAL_CONDITION_LIMIT
            pairs = dataclasses.replace(pairs, limit=limit, transposed=dataclasses.replace(
                pairs.transposed, limit=limit))
        return cls(n, m, size, scalar_rows, scalar_d, a_rows[src], a_cols[src], src,
                   d_of_row[a_rows[src]], pairs, _inactive(pattern, pairs),
                   _full(pattern.indices.size, size, pairs))

    # -- the sparse executor's per-element pivots ------------------------------------------

    def scalar_values(self, D_values: FloatArray) -> FloatArray:
        """D_ii per row of A where D's block there is 1×1, NaN inside larger blocks."""
        d = np.full(self.m, np.nan)
        d[self.scalar_rows] = D_values[self.scalar_d]
        return d

    def singletons(self, op: KKTOperator) -> Singletons:
        """Element ``op``'s lead and trail pivots (kinds 1 and 2) for J, or for Jᵀ when the
        operator is transposed: bound rows where D_ii = 1 and the entry is nonzero, one per
        column (a second active bound on one variable stays in the core, which is then
        singular as J is), and inactive rows where D_ii = 0."""
        D_values = op.pattern.d_values(op.D)
        lead = (D_values[self.bound_d] == 1.0) & (op.A.data[self.bound_src] != 0.0)
        at = np.flatnonzero(lead)
        cols = self.bound_cols[at]
        first = np.ones(at.size, bool)
        first[1:] = cols[1:] != cols[:-1]
        at, cols = at[first], cols[first]
        rows = self.n + self.bound_rows[at]
        inactive = self.n + self.scalar_rows[D_values[self.scalar_d] == 0.0]
        free = np.ones(self.size, bool)
        free[rows] = free[cols] = free[inactive] = False
        pivots = op.A.data[self.bound_src[at]]
        peel = Singletons(rows, cols, pivots, np.concatenate([cols, inactive]),
                          np.concatenate([rows, inactive]),
                          np.concatenate([pivots, -np.ones(inactive.size)]), np.flatnonzero(free))
        return peel.T if op.transposed else peel

    def condition_limit(self, op: KKTOperator) -> ConditionLimit:
        """The condition estimate above which element ``op``'s J is treated as singular:
        higher where every block of D is 1×1, or 0 or I (:mod:`.conditioning`)."""
        polyhedral = self.scalar_rows.size == self.m
        return ConditionLimit(lambda: polyhedral or op.D.locally_constant())

    # -- the batched executor --------------------------------------------------------------

    @property
    def batched_limit(self) -> int:
        """The largest reduced order the batched executor takes."""
        return MIXED_MIN_ORDER

    @property
    def compact_above(self) -> int:
        """The reduced order above which the batched executor drops each element's inactive
        rows first (see DENSE_ORDER and MIXED_MIN_ORDER)."""
        return MIXED_MIN_ORDER if self.full else DENSE_ORDER

    @functools.cached_property
    def smallest_batched_order(self) -> int:
        """The order of the batched executor's LU with every droppable inequality row
        inactive (S less its diagonal pivots and those rows): where even that is above
        :attr:`batched_limit`, no element can be batched."""
        droppable = 0 if self.inactive is None else int(np.isin(self.inactive.rows,
                                                                self.pairs.rest).sum())
        return self.pairs.reduced_order - self.pairs.diagonal - droppable

    @property
    def batched_work(self) -> float:
        """The batched executor's work per element, as :mod:`.banded` counts its own: S
        assembled densely at its order before any pivot (each entry zeroed, written and
        updated), then the LU at :attr:`smallest_batched_order`. The LU alone undercounts
        where the diagonal pivots leave little: sparsemax's S of order 201 is solved by an
        LU of order 1, its backward dominated by S (band LU / batched 0.54–0.97 at
        batches 1–128)."""
        return self.pairs.reduced_order**2 + self.smallest_batched_order**3 / 3.0


def _full(nnz: int, size: int, pairs: PairPivots) -> bool:
    """Whether J (nnz entries, order ``size``) or the matrix its batched executor's LU
    factorises (S less its leading diagonal pivots) is at least DENSE_FRACTION full: either
    way an element's own LU is a dense one of at least that order (a spectraplex
    projection's J is 6% full, but its S of order 421 is factorised densely by ``Direct``
    and its LU's matrix of order 211 is 99.6% full)."""
    if nnz >= DENSE_FRACTION * size * size:
        return True
    order = pairs.reduced_order - pairs.diagonal
    return pairs.lu_entries is not None and order > 0 and \
        pairs.lu_entries >= DENSE_FRACTION * order * order


def _inactive(pattern: KKTPattern, pairs: PairPivots) -> InactiveRows | None:
    """The inequality rows the batched executor drops where they are inactive, or None when
    there are none or when dropping them would move a row of J_RQ or a column of J_QR
    within the pair blocks (cvxpy puts its variables, where those are, first)."""
    keep = pattern.scalar_rows >= pattern.zero_rows
    rows = pattern.at(pattern.n + pattern.scalar_rows[keep])
    if not rows.size:
        return None
    if not pairs.after_blocks(rows.min()):
        return None
    return InactiveRows.of(pattern.size, pattern.entry_rows, pattern.entry_cols, rows,
                           pattern.scalar_d[keep])
