"""Exact elimination of J's singleton pairs before a factorisation (used by ``Direct``).

A row of J with one nonzero J[ρ, κ] fixes z_κ = r_ρ / J[ρ, κ] before anything else is known
(a *lead* pair); a column with one nonzero J[ρ, κ] leaves z_κ in equation ρ alone, which
gives it once everything else is known (a *trail* pair). With the rows ordered (lead, core,
trail) and the columns likewise, J is block lower triangular with diagonal pivot blocks
around the core J_RR, so det J = ±det J_RR · ∏ pivots: only J_RR is factorised, it is
singular exactly when J is, and the solution is exact. For Jᵀ the roles swap.

In J = [[P, Aᵀ D], [A, D − I]] the 1×1 blocks of D give them without looking at J:

- an inactive inequality (D_ii = 0): column n+i of J is −e_{n+i}, a trail pair;
- a bound or a fixed variable: a dual row i with D_ii = 1 (zero cone, or an active
  inequality) whose row of A is a·e_jᵀ. Row n+i of J is a·e_jᵀ (lead: du_j = r_{n+i} / a)
  and column n+i is a·e_j (trail: dv_i from row j, once the rest is known).

Left in, the bound pairs cost SuperLU dearly: on a 2,000-variable standard-form LP
(benchmark ``sparse_lp``) J without its inactive rows has order 4,000 and fills to 2.7M
(~360 ms); peeled, what is left is the basis alone (see :func:`anti_diagonal`). Several such
rows on one column (x ≥ 0 and x ≤ 0 both active) make J singular: one is peeled, the others
stay in the core, which is then singular too, and the caller's singular-J path applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .kkt import KKTOperator

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Singletons:
    """J's peeled lead pairs (row singletons), trail pairs (column singletons) and its core
    (the rows and columns left: the same indices, so J_RR = J[core][:, core])."""

    lead_rows: Index
    lead_cols: Index
    lead_pivots: FloatArray
    trail_rows: Index
    trail_cols: Index
    trail_pivots: FloatArray
    core: Index  # ascending

    @classmethod
    def of(cls, op: KKTOperator) -> Singletons:
        """The pairs of J (or Jᵀ, for a transposed operator), read off D's 1×1 blocks and
        the rows of A with index operations (no loop over rows)."""
        n, m = op.n, op.m
        d = op.scalar_blocks()
        rows, cols, a = _single_entries(op.A, d == 1.0)
        rows = n + rows
        inactive = n + np.flatnonzero(d == 0.0)
        free = np.ones(n + m, bool)
        free[rows] = free[cols] = free[inactive] = False
        peel = cls(rows, cols, a, np.concatenate([cols, inactive]),
                   np.concatenate([rows, inactive]),
                   np.concatenate([a, -np.ones(inactive.size)]), np.flatnonzero(free))
        return peel.T if op.transposed else peel

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


def _single_entries(A: sp.csc_matrix,
                    among: npt.NDArray[np.bool_]) -> tuple[Index, Index, FloatArray]:
    """(row, column, value) of the rows of A flagged in ``among`` that hold one nonzero, at
    most one row per column (the others are left alone)."""
    if among.any():
        among = among & (np.bincount(A.indices, minlength=A.shape[0]) == 1)
    if not among.any():
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    lone = np.flatnonzero(among[A.indices])  # positions in A, by column
    lone = lone[A.data[lone] != 0.0]
    cols = np.searchsorted(A.indptr, lone, side="right") - 1
    first = np.ones(lone.size, bool)
    first[1:] = cols[1:] != cols[:-1]
    lone, cols = lone[first], cols[first]
    return A.indices[lone].astype(np.intp), cols, A.data[lone]


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
