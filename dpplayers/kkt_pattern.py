"""The fixed sparsity pattern of J = [[P, Aᵀ D], [A, D − I]] for one compiled problem.

P and A keep one pattern for every θ (the compiler fixes them) and D = DΠ_K*(v) is block
diagonal with one dense block per cone, so J's pattern is fixed too. Built once per
program, it turns each element's J into a few gathers and one ``bincount`` onto the CSC
data array: no sparse products, no sorting and no format conversions per element.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .cones import ProductCone, ProjectionDerivative

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


def _block_entries(cone: ProductCone) -> tuple[Index, Index]:
    """(row, col) of every entry of DΠ's dense blocks, in ``ProjectionDerivative`` order."""
    rows, cols = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
    for _, idx in cone.groups:
        k, d = idx.shape
        rows.append(np.broadcast_to(idx[:, :, None], (k, d, d)).ravel())
        cols.append(np.broadcast_to(idx[:, None, :], (k, d, d)).ravel())
    return np.concatenate(rows), np.concatenate(cols)


def block_values(D: ProjectionDerivative) -> FloatArray:
    """DΠ's block entries as one vector, in the order of :func:`_block_entries`."""
    parts = [op.as_matrices().ravel() for op, _ in D.blocks]
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass(frozen=True, eq=False)
class KKTPattern:
    """J's CSC pattern and where each source entry lands in its data array."""

    n: int
    m: int
    indices: npt.NDArray[np.int32]
    indptr: npt.NDArray[np.int32]
    p_src: Index  # which upper-triangle datum each full-P entry copies
    atd_a: Index  # the products A_ij D_ic of Aᵀ D (top right): which A datum ...
    atd_d: Index  # ... times which D block value
    p_full: tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]] | None  # CSC of full P
    positions: Index  # J position of every source entry: Aᵀ D, A, D, −I (in that order)
    positions_with_P: Index  # the same followed by full P

    @classmethod
    def build(cls, n: int, m: int, A_rows: Index, A_cols: Index, P_rows: Index | None,
              P_cols: Index | None, cone: ProductCone) -> KKTPattern:
        d_rows, d_cols = _block_entries(cone)
        # Aᵀ D: pair every A entry (i, j) with every D entry (i, c) in the same row i
        order = np.argsort(d_rows, kind="stable")
        counts = np.bincount(d_rows, minlength=m)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        reps = counts[A_rows]
        atd_a = np.repeat(np.arange(A_rows.size), reps)
        within = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        atd_d = order[np.repeat(starts[A_rows], reps) + within]
        sources = [
            (A_cols[atd_a], n + d_cols[atd_d]),  # Aᵀ D
            (n + A_rows, A_cols),  # A
            (n + d_rows, n + d_cols),  # D
            (n + np.arange(m), n + np.arange(m)),  # −I
        ]
        p_src, p_full = np.zeros(0, np.intp), None
        if P_rows is not None and P_cols is not None:
            # full symmetric P in CSC order; p_src says which upper-triangle datum each copies
            off = P_rows != P_cols
            full_r = np.concatenate([P_rows, P_cols[off]])
            full_c = np.concatenate([P_cols, P_rows[off]])
            perm = np.argsort(full_c.astype(np.int64) * n + full_r, kind="stable")
            full_r, full_c = full_r[perm], full_c[perm]
            p_src = np.concatenate([np.arange(P_rows.size), np.flatnonzero(off)])[perm]
            p_full = (full_r.astype(np.int32),
                      np.searchsorted(full_c, np.arange(n + 1)).astype(np.int32))
            sources.append((full_r, full_c))
        size = n + m
        rows = np.concatenate([r for r, _ in sources]).astype(np.int64)
        cols = np.concatenate([c for _, c in sources]).astype(np.int64)
        unique, pos = np.unique(cols * size + rows, return_inverse=True)
        ucols = unique // size
        bounds = np.cumsum([0] + [r.size for r, _ in sources])
        return cls(
            n=n, m=m, indices=(unique % size).astype(np.int32),
            indptr=np.searchsorted(ucols, np.arange(size + 1)).astype(np.int32),
            p_src=p_src, atd_a=atd_a, atd_d=atd_d, p_full=p_full,
            positions=pos[: bounds[4]], positions_with_P=pos,
        )

    def full_P(self, P_upper_data: FloatArray) -> sp.csc_matrix | None:
        """The symmetric P from its upper-triangle data (same pattern every call)."""
        if self.p_full is None:
            return None
        return sp.csc_matrix((P_upper_data[self.p_src], *self.p_full), shape=(self.n, self.n))

    def assemble(self, P_upper_data: FloatArray | None, A_data: FloatArray,
                 D_values: FloatArray) -> sp.csc_matrix:
        """J for one element from its data vectors and DΠ's block values."""
        size = self.n + self.m
        weights = [A_data[self.atd_a] * D_values[self.atd_d], A_data, D_values, -np.ones(self.m)]
        positions = self.positions
        if P_upper_data is not None and self.p_full is not None:
            weights.append(P_upper_data[self.p_src])
            positions = self.positions_with_P
        data = np.bincount(positions, weights=np.concatenate(weights),
                           minlength=self.indices.size)
        return sp.csc_matrix((data, self.indices, self.indptr), shape=(size, size))
