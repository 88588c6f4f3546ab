"""Exact elimination of J's singleton pairs before a factorisation (used by ``Direct``).

A row of J with one nonzero J[ρ, κ] fixes z_κ = r_ρ / J[ρ, κ] before anything else is known
(a *lead* pair); a column with one nonzero J[ρ, κ] leaves z_κ in equation ρ alone, which
gives it once everything else is known (a *trail* pair). With the rows ordered (lead, core,
trail) and the columns likewise, J is block lower triangular with diagonal pivot blocks
around the core J_RR, so det J = ±det J_RR · ∏ pivots: only J_RR is factorised, it is
singular exactly when J is, and the solution is exact. For Jᵀ the roles swap.

In J = [[P, Aᵀ D], [A, D − I]] they are the inactive rows (trail) and the bound rows (lead)
of the program's elimination plan (:mod:`.plan`), which finds them.

Left in, the bound pairs cost SuperLU dearly: on a 2,000-variable standard-form LP
(benchmark ``sparse_lp``) J without its inactive rows has order 4,000 and fills to 2.7M
(~360 ms); peeled, what is left is the basis alone (see :func:`anti_diagonal`). Several such
rows on one column (x ≥ 0 and x ≤ 0 both active) make J singular: one is peeled, the others
stay in the core, which is then singular too, and the caller's singular-J path applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .._sparse import CSCPattern, concatenated_ranges

if TYPE_CHECKING:
    from .kkt import KKTOperator

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Singletons:
    """J's peeled lead pairs (row singletons), trail pairs (column singletons) and its core
    (the rows and columns left: the same indices, so J_RR = J[core][:, core]); one
    element's, from the program's plan (:meth:`.plan.EliminationPlan.singletons`)."""

    lead_rows: Index
    lead_cols: Index
    lead_pivots: FloatArray
    trail_rows: Index
    trail_cols: Index
    trail_pivots: FloatArray
    core: Index  # ascending

    @property
    def T(self) -> Singletons:
        """The same elimination for Jᵀ: J's column singletons are Jᵀ's row singletons."""
        return Singletons(self.trail_cols, self.trail_rows, self.trail_pivots, self.lead_cols,
                          self.lead_rows, self.lead_pivots, self.core)

    def reduce(self, J: sp.spmatrix, rhs: FloatArray) -> tuple[FloatArray, FloatArray]:
        """For J z = r (rhs (N, k)): z with its lead unknowns set (zero elsewhere), and the
        core's right-hand side r_R − J[R, lead] z_lead."""
        z = np.zeros(rhs.shape)
        z[self.lead_cols] = rhs[self.lead_rows] / self.lead_pivots[:, None]
        r_core = rhs[self.core]
        if self.lead_rows.size:
            r_core = r_core - (J @ z)[self.core]
        return z, r_core

    def complete(self, J: sp.spmatrix, z: FloatArray, z_core: FloatArray,
                 rhs: FloatArray) -> FloatArray:
        """Fill in the core's solution, then the trail unknowns from their rows."""
        z[self.core] = z_core
        if self.trail_rows.size:  # z is still zero on the trail columns
            z[self.trail_cols] = ((rhs[self.trail_rows] - (J @ z)[self.trail_rows])
                                  / self.trail_pivots[:, None])
        return z


@dataclass(frozen=True)
class Auxiliaries:
    """The program's variables that may turn free (:func:`free_auxiliaries`): unread by R,
    no entry in P, and their rows of A (from J's fixed pattern, found once per program)."""

    candidates: Index  # the variables
    rows: Index  # the rows of A each meets, candidate after candidate ...
    owner: Index  # ... and which candidate each row is of
    empty: npt.NDArray[np.bool_]  # per candidate: it meets no row at all

    @classmethod
    def of(cls, A: CSCPattern, P: CSCPattern | None,
           unread: npt.NDArray[np.bool_]) -> Auxiliaries:
        candidates = np.flatnonzero(unread)
        if P is not None:
            in_P = np.zeros(unread.size, bool)
            in_P[P.indices] = True
            in_P[np.flatnonzero(np.diff(P.indptr))] = True
            candidates = candidates[~in_P[candidates]]
        starts, counts = A.indptr[candidates], np.diff(A.indptr)[candidates]
        rows = A.indices[concatenated_ranges(starts, counts)].astype(np.intp)
        return cls(candidates, rows, np.repeat(np.arange(candidates.size), counts), counts == 0)


def free_auxiliaries(op: KKTOperator, peel: Singletons, aux: Auxiliaries) -> Singletons:
    """``peel`` with its core less the candidate variables that meet only inactive rows
    (they then stay 0 in z: :meth:`Singletons.reduce` starts from zeros).

    A variable t with no entry in P whose rows of A all have D = 0 has a zero row (AᵀD) and,
    once the inactive rows are peeled, a zero column in the core: it is free in the
    canonical solution (an interior-point solver returns the middle of its interval) and J
    is singular. But nothing the user asked for depends on it: the rest of the core does
    not meet it, the inactive rows' dv it meets give dy = DΠ dv = 0, and R does not read
    it. So the system without it gives the requested derivative exactly, where the
    minimum-norm solve of the whole J would cost an SVD per element. (For Jᵀ the same t:
    its row and column swap.)"""
    if not aux.candidates.size:
        return peel
    active = ~(op.scalar_blocks()[aux.rows] == 0.0)  # NaN (a larger cone block): active
    free = ~aux.empty
    free[aux.owner[active]] = False
    if not free.any():
        return peel
    return dataclasses.replace(peel, core=np.setdiff1d(peel.core, aux.candidates[free]))


def anti_diagonal(J_RR: sp.csc_matrix | FloatArray,
                  p: int) -> sp.csc_matrix | FloatArray | None:
    """B when J_RR = [[0, Bᵀ], [B, 0]] with p × p blocks, else None (J_RR sparse or dense).

    This is the core of an LP at a non-degenerate vertex once its bounds are peeled: P = 0
    on the basic variables, D − I = 0 on the active rows, and B the basis. It is a symmetric
    permutation of blockdiag(B, Bᵀ), so one LU of B solves it."""
    if 2 * p != J_RR.shape[0] or p == 0:
        return None
    if isinstance(J_RR, np.ndarray):
        B = J_RR[p:, :p]
        zero = not (J_RR[:p, :p].any() or J_RR[p:, p:].any())
        return B if zero and np.array_equal(J_RR[:p, p:], B.T) else None
    entry_cols = np.repeat(np.arange(2 * p), np.diff(J_RR.indptr))
    if np.any((J_RR.indices < p) == (entry_cols < p)):  # an entry in a diagonal block
        return None
    k = J_RR.indptr[p]
    B = sp.csc_matrix((J_RR.data[:k], J_RR.indices[:k] - p, J_RR.indptr[: p + 1]), shape=(p, p))
    T = sp.csc_matrix((J_RR.data[k:], J_RR.indices[k:], J_RR.indptr[p:] - k), shape=(p, p))
    T.sort_indices()
    Bt = B.T.tocsc()
    Bt.sort_indices()
    same = (np.array_equal(T.indptr, Bt.indptr) and np.array_equal(T.indices, Bt.indices)
            and np.array_equal(T.data, Bt.data))
    return B if same else None


@dataclass(frozen=True)
class PairElimination:
    """The 2×2 pair pivots of :mod:`.pair_pivots` (cvxpy's ``sum_squares`` auxiliaries:
    p's row and column hold nothing outside {p, q}) eliminated exactly inside ``Direct``'s
    core, so that its LU is of the Schur complement S = J_RR − J_Rq diag(P / det) J_qR
    instead of the core (a 20 × 20 spectraplex projection: order 1,221 → 411).

    Index arrays are positions within the core; for each pair, over (q, p), the pivot
    [[c, a2], [a, P]] = [[J_qq, J_qp], [J_pq, J_pp]] and det = P c − a a2. Solving with Jᵀ
    uses the same S transposed (the same index set eliminated)."""

    rest: Index  # the core positions S is of
    q: Index
    p: Index
    J_Rq: sp.csc_matrix | FloatArray  # (rest, q)
    J_qR: sp.csr_matrix | FloatArray  # (q, rest)
    P: FloatArray
    a: FloatArray
    a2: FloatArray
    c: FloatArray
    det: FloatArray

    @staticmethod
    def positions(core: Index, p: Index, q: Index) -> tuple[Index, Index, Index] | None:
        """(rest, q, p) as core positions for the pairs (J indices p, q) that lie in the
        core; None where none does. S is of order ``rest.size``."""
        where = np.full(int(max(core.max(initial=-1), p.max(initial=-1),
                                q.max(initial=-1))) + 1, -1)
        where[core] = np.arange(core.size)
        inside = (where[p] >= 0) & (where[q] >= 0)
        if not inside.any():
            return None
        qc, pc = where[q[inside]], where[p[inside]]
        rest = np.setdiff1d(np.arange(core.size), np.concatenate([qc, pc]), assume_unique=True)
        return rest, qc, pc

    @classmethod
    def of(cls, J_core: sp.csc_matrix, rest: Index, qc: Index, pc: Index, dense: bool = False,
           ) -> tuple[PairElimination, sp.csc_matrix | FloatArray] | None:
        """The elimination of the pairs at core positions (qc, pc) (:meth:`positions`), and
        S; None where a pivot is singular (det = 0) or, for a sparse S, where S would hold
        more entries than the core (the products J_Rq J_qR fill in: F x − g with a dense
        F). With ``dense`` (for a caller that factorises S densely), S and the blocks are
        dense arrays sliced from the core densified, S's update one BLAS product, and S is
        formed whatever its fill (a dense LU of S's order beats one of the core's): box
        least squares with F 260 × 260, 10% full, S of order 337 in 2.6 ms against 7.0 ms
        by sparse products; with a dense F, an LU of 337 instead of the core's 857."""
        if dense:
            J = J_core.toarray()
            P, a, a2, c = J[pc, pc], J[pc, qc], J[qc, pc], J[qc, qc]
        else:
            J = J_core.tocsr()
            P, a = _entries(J, pc, pc), _entries(J, pc, qc)
            a2, c = _entries(J, qc, pc), _entries(J, qc, qc)
        det = P * c - a * a2
        if not np.all(np.isfinite(det)) or np.any(det == 0.0):
            return None
        if dense:
            J_Rq, J_qR = J[np.ix_(rest, qc)], J[np.ix_(qc, rest)]
            S = J[np.ix_(rest, rest)] - (J_Rq * (P / det)) @ J_qR
            return cls(rest, qc, pc, J_Rq, J_qR, P, a, a2, c, det), S
        J_RR = J_core[rest][:, rest]
        J_Rq = sp.csc_matrix(J_core[rest][:, qc])
        J_qR = sp.csr_matrix(J[qc][:, rest])
        update = J_Rq @ sp.diags(P / det) @ J_qR
        if update.nnz > J_RR.nnz + J_Rq.nnz + J_qR.nnz:
            return None
        S = sp.csc_matrix(J_RR - update)
        S.eliminate_zeros()
        return cls(rest, qc, pc, J_Rq, J_qR, P, a, a2, c, det), S

    def reduce(self, rhs: FloatArray, transpose: bool) -> FloatArray:
        """The core's right-hand side (core, k) ↦ S's: r_R − J_Rq z_q⁰ (J_qRᵀ for Jᵀ), z_q⁰
        the pivots' answer with z_R = 0."""
        r_q, r_p = rhs[self.q], rhs[self.p]
        a2 = self.a if transpose else self.a2
        z_q = (self.P[:, None] * r_q - a2[:, None] * r_p) / self.det[:, None]
        return rhs[self.rest] - ((self.J_qR.T if transpose else self.J_Rq) @ z_q)

    def complete(self, rhs: FloatArray, z_R: FloatArray, transpose: bool) -> FloatArray:
        """The core's solution from S's z_R: each pair's z_q, z_p from its 2×2 pivot."""
        a, a2 = (self.a2, self.a) if transpose else (self.a, self.a2)
        u = rhs[self.q] - ((self.J_Rq.T if transpose else self.J_qR) @ z_R)
        r_p = rhs[self.p]
        z = np.empty((rhs.shape[0], z_R.shape[1]))
        z[self.rest] = z_R
        z[self.q] = (self.P[:, None] * u - a2[:, None] * r_p) / self.det[:, None]
        z[self.p] = (self.c[:, None] * r_p - a[:, None] * u) / self.det[:, None]
        return z


def _entries(J: sp.csr_matrix, rows: Index, cols: Index) -> FloatArray:
    """J[rows[i], cols[i]] for each i (zero where not stored)."""
    return np.asarray(J[rows, cols]).ravel()
