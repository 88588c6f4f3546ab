"""Batched elimination of J's inactive inequality rows, around the batched dense solve.

Where the 1×1 block of D is 0 (an inequality with y_i = 0 at the solution), column n + i
of J = [[P, Aᵀ D], [A, D − I]] is −e_{n+i}: z_{n+i} appears in its own row alone, a trail
unknown of J and a lead one of Jᵀ (:mod:`dpplayers._derivative.elimination` peels the same pairs for
``Direct``, one element at a time). Which rows are inactive differs between the elements of
a batch, so each element's J is compacted to its other rows and columns (``PairPivots``
with ``keep``) and the dropped unknowns are recovered from their rows by gathers:

    J z = r:   solve the kept system for z_K (r_K as is), then z_i = (r_i − A_i z_K) / J_ii;
    Jᵀ z = r:  z_i = r_i / J_ii, then solve the kept system for r_K − A_iᵀ z_i.

Lasso with a box (F 100 × 50): J's order after pair elimination goes from 300 to 160–172,
within the batched solve's limit, where before each element had its own SuperLU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .._sparse import gather
from .pair_pivots import PairPivots

if TYPE_CHECKING:
    from .elimination import Auxiliaries
    from .pattern import KKTPattern

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class InactiveRows:
    """J's rows that drop out where their 1×1 block of D is zero, and what recovering their
    unknowns needs: each row's D value and diagonal entry, and its other entries."""

    size: int  # the order of J
    rows: Index  # J rows n + i of D's 1×1 blocks
    d_pos: Index  # their D values' positions in ``block_values`` order
    diag: Index  # the position of J[row, row] among J's entries
    entries: Index  # the positions of the rows' other entries among J's entries, ...
    entry_row: Index  # ... which of ``rows`` each is in ...
    entry_col: Index  # ... and its column
    to_rows: sp.csr_array  # sums entries by row (len(rows) × entries)
    to_cols: sp.csr_array  # sums entries by column (size × entries)

    @classmethod
    def of(cls, size: int, J_rows: npt.ArrayLike, J_cols: npt.ArrayLike, rows: Index,
           d_pos: Index) -> InactiveRows:
        """For J's entries at (J_rows, J_cols), in the order values will come in, and the J
        rows of D's 1×1 blocks with the positions of their values."""
        J_rows, J_cols = np.asarray(J_rows, dtype=np.intp), np.asarray(J_cols, dtype=np.intp)
        which = np.full(size, -1)
        which[rows] = np.arange(rows.size)
        on_diag = np.flatnonzero((J_rows == J_cols) & (which[J_rows] >= 0))
        diag = np.empty(rows.size, np.intp)
        diag[which[J_rows[on_diag]]] = on_diag
        entries = np.flatnonzero((J_rows != J_cols) & (which[J_rows] >= 0))
        entry_row, entry_col = which[J_rows[entries]], J_cols[entries]
        ones = np.ones(entries.size)
        k = np.arange(entries.size)
        return cls(size, rows, d_pos, diag, entries, entry_row, entry_col,
                   sp.csr_array((ones, (entry_row, k)), shape=(rows.size, entries.size)),
                   sp.csr_array((ones, (entry_col, k)), shape=(size, entries.size)))

    def dropped(self, D_values: FloatArray) -> Mask:
        """(b, size): the J indices each element drops, for D's block values (entries, b)."""
        drop = np.zeros((D_values.shape[1], self.size), bool)
        drop[:, self.rows] = (D_values[self.d_pos] == 0.0).T
        return drop

    def solve(self, pivots: PairPivots, values: FloatArray, rhs: FloatArray, transpose: bool,
              drop: Mask) -> tuple[FloatArray, FloatArray]:
        """J z = rhs (or Jᵀ z = rhs) for values (b, nnz) and rhs (b, size, k), each element
        without its dropped rows (and dropped variables: free auxiliaries, z = 0); returns
        z and the residual's squared norm (b, k), like ``PairPivots.solve``."""
        take = lambda a, at: np.take(a, at, axis=1)  # faster than a[:, at]
        dropped = take(drop, self.rows)
        D, diag = dropped[..., None], _columns(values, self.diag)[..., None]
        w = _columns(values, self.entries) * take(dropped, self.entry_row)  # dropped rows only
        keep = ~take(drop, pivots.rest)
        r_D = take(rhs, self.rows)
        if transpose:  # lead: z_i first, then the rest without its terms
            with np.errstate(all="ignore"):  # J_ii = 0 on the rows kept
                y = np.where(D, r_D / diag, 0.0)
            shift = _summed(self.to_cols, w[..., None] * take(y, self.entry_row))
            rhs = rhs - shift
            z, res_sq = pivots.solve(values, rhs, True, keep)
            z_D, res_D = y, diag * y - r_D
        else:  # trail: the rest first, then z_i from its row
            z, res_sq = pivots.solve(values, rhs, False, keep)
            t = _summed(self.to_rows, w[..., None] * take(z, self.entry_col))
            with np.errstate(all="ignore"):  # J_ii = 0 on the rows kept
                z_D = (r_D - t) / diag
                res_D = t + diag * z_D - r_D
        z[:, self.rows] = np.where(D, z_D, z[:, self.rows])
        # the kept system's residual is zero on the dropped rows: theirs adds to it
        res_D = np.where(D, res_D, 0.0)
        res_sq = res_sq + np.vecdot(res_D, res_D, axis=1)
        # a dropped variable (a free auxiliary: every row it meets dropped, no entry in P)
        # has z = 0 and, in J and in Jᵀ less the dropped rows' terms, an empty row: its
        # residual is its right-hand side (0 where the outputs do not read it)
        free = drop.copy()
        free[:, self.rows] = False
        if free.any():
            r_F = np.where(free[..., None], rhs, 0.0)
            res_sq = res_sq + np.vecdot(r_F, r_F, axis=1)
        return z, res_sq


@dataclass(frozen=True, eq=False)
class FreeAuxiliaries:
    """The program's auxiliaries the batched solve can drop with the inactive rows where an
    element leaves them free (:func:`~.elimination.free_auxiliaries`: every row they meet
    inactive, no entry in P, unread), found once per program: those whose rows are all
    scalar inequality rows (an SOC's or an equality's never turn inactive) and that come
    after every index of the pair blocks in S's order, as the dropped rows must (``plan``)."""

    size: int  # the order of J (J̃)
    at: Index  # their indices in J (J̃) ...
    d_pos: Index  # ... their rows' D value positions, one candidate after another ...
    starts: Index  # ... and where each candidate's rows start among them

    @classmethod
    def of(cls, pattern: KKTPattern, aux: Auxiliaries) -> FreeAuxiliaries | None:
        """For J's (J̃'s) pattern and the program's auxiliaries; None where none qualifies."""
        plan = pattern.plan
        if plan.inactive is None or not aux.candidates.size:
            return None
        scalar_d = np.full(pattern.m, -1)
        scalar_d[pattern.scalar_rows] = pattern.scalar_d
        d_pos = scalar_d[aux.rows]
        bad_row = (d_pos < 0) | (aux.rows < pattern.zero_rows)
        possible = ~aux.empty & (np.bincount(aux.owner[bad_row], minlength=aux.candidates.size) == 0)
        rest = plan.pairs.rest
        at = pattern.at(aux.candidates)
        where = np.searchsorted(rest, at)
        in_rest = rest[np.minimum(where, rest.size - 1)] == at
        chosen = possible & in_rest & plan.pairs.after_blocks(at)
        if not chosen.any():
            return None
        mine = chosen[aux.owner]
        starts = np.flatnonzero(np.diff(aux.owner[mine], prepend=-1))
        return cls(pattern.size, at[chosen], d_pos[mine], starts)

    def dropped(self, D_values: FloatArray) -> Mask | None:
        """(b, size): the auxiliaries each element leaves free, for D's block values
        (entries, b); None where no element has one."""
        free = np.logical_and.reduceat(D_values[self.d_pos] == 0.0, self.starts, axis=0)
        if not free.any():
            return None
        out = np.zeros((D_values.shape[1], self.size), bool)
        out[:, self.at] = free.T
        return out


def _columns(values: FloatArray, at: Index) -> FloatArray:
    """values[:, at] for values (b, nnz): the batched executor's values are a transposed
    (nnz, b) array (:func:`~dpplayers._sparse.gather`)."""
    return gather(values, at, 1)


def _summed(S: sp.csr_array, terms: FloatArray) -> FloatArray:
    """S applied along axis 1 of terms (b, entries, k): (b, S rows, k), one sparse product."""
    b, e, k = terms.shape
    out = S @ terms.transpose(1, 0, 2).reshape(e, b * k)
    return out.reshape(S.shape[0], b, k).transpose(1, 0, 2)
