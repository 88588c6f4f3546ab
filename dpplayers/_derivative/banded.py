"""J as a band matrix: where J's unknowns, put in reverse Cuthill–McKee order once per
program, leave every entry within a narrow band (an MPC's stages, a chain of differences,
a cone per entry of a vector), each element's J is factorised by LAPACK's band LU with
partial pivoting (gbtrf), in place of the batched executor's dense LU of the reduced J
(or, above its limit, a sparse LU per element: the entropy workload's SuperLU of order 900).

The band LU of an MPC's J (order 288, 21 sub- and super-diagonals) takes 47 µs where the
dense LU of its reduced J (order 163) takes 157 µs, and the entries go into band storage by
one scatter for the whole batch instead of the pair and diagonal eliminations' products.
Partial pivoting stays within the band (gbtrf keeps kl more super-diagonals for it), so the
answer is that of a dense LU of J. Each solve carries the fixed probe as one more column:
an element whose probe estimate of cond(J) is suspect is kept only where gbcon's estimate
is within the program's limit; singular, suspect or not cleanly solved elements are
reported with an infinite residual, for the other executors to take (as ``DenseBatch``'s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from .. import _lapack
from .conditioning import PROBE_SUSPECT, probe

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

@dataclass(frozen=True, eq=False)
class BandLayout:
    """Where each entry of J (``KKTPattern.entries`` order) goes in band storage, with J's
    unknowns permuted to ``perm`` (band position p holds unknown perm[p])."""

    order: int
    kl: int
    ku: int
    perm: Index
    place: Index  # each entry's flat place in an element's (order, ldab) C-ordered storage
    rows: Index  # each entry's row and column in band positions
    cols: Index
    by_row: Index  # entries sorted by row, and where each row's run starts
    row_starts: Index
    by_col: Index
    col_starts: Index

    @property
    def ldab(self) -> int:
        return 2 * self.kl + self.ku + 1

    @classmethod
    def of(cls, size: int, rows: Index, cols: Index, dense_order: int) -> BandLayout | None:
        """The layout for J of order ``size`` with entries at (rows, cols), or None where
        its band LU's multiply-adds (order × kl × (kl + ku + 1)) would exceed a dense LU's of
        ``dense_order`` (order³ / 3). Measured where it is taken (backward, band / the
        batched dense executor, batches 1–32): total-variation denoising of 20–400 points
        0.10–0.77, MPCs of horizon 10–40 0.15–0.65, entropy terms on 10–300 entries
        0.23–0.89 (``benchmarks/README.md``); an MPC of horizon 3 or 5 is not taken."""
        pattern = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(size, size))
        perm = reverse_cuthill_mckee((pattern + pattern.T).tocsr(), symmetric_mode=True)
        perm = np.asarray(perm, np.intp)
        position = np.empty(size, np.intp)
        position[perm] = np.arange(size)
        r, c = position[rows], position[cols]
        kl, ku = int(max((r - c).max(initial=0), 0)), int(max((c - r).max(initial=0), 0))
        if size * kl * (kl + ku + 1) > dense_order**3 / 3.0:
            return None
        if np.bincount(r, minlength=size).min() == 0 or np.bincount(c, minlength=size).min() == 0:
            return None  # an empty row or column: J is singular, leave it to Direct
        ldab = 2 * kl + ku + 1
        by_row, by_col = np.argsort(r, kind="stable"), np.argsort(c, kind="stable")
        return cls(size, kl, ku, perm, c * ldab + (kl + ku + r - c), r, c, by_row,
                   np.searchsorted(r[by_row], np.arange(size)), by_col,
                   np.searchsorted(c[by_col], np.arange(size)))

    def solve(self, values: FloatArray, rhs: FloatArray, transpose: bool,
              limit: float | None) -> tuple[FloatArray, FloatArray]:
        """values (nnz, b) of b elements' J, rhs (b, N, q) ↦ (z, relative residual per
        element; inf where J is singular or possibly near-singular beyond ``limit``)."""
        b, N, q = rhs.shape
        storage = np.zeros((b, N * self.ldab))
        storage[:, self.place] = values.T
        storage = storage.reshape(b, N, self.ldab)
        piv, nonsingular = _lapack.gbtrf(storage, self.kl, self.ku)
        rhs = rhs.take(self.perm, 1)  # in band positions
        columns = np.empty((b, q + 1, N))  # each element's right-hand sides transposed
        columns[:, :q] = rhs.transpose(0, 2, 1)
        columns[:, q] = probe(N)
        _lapack.gbtrs(storage, piv, columns, self.kl, self.ku, transpose)
        z = columns[:, :q].transpose(0, 2, 1)
        # the probe estimate ‖J‖_F ‖J⁻¹g‖ / ‖g‖ (‖g‖² = N) against PROBE_SUSPECT, as the
        # batched dense LU's; a suspect J is kept only by gbcon's estimate within ``limit``
        norm_sq = np.einsum("ij,ij->j", values, values)
        probed = columns[:, q]
        kept = nonsingular & (norm_sq * np.vecdot(probed, probed) <= PROBE_SUSPECT**2 * N)
        for k in np.flatnonzero(nonsingular & ~kept).tolist() if limit is not None else ():
            anorm = math.sqrt(N * norm_sq[k])  # ≥ ‖J‖₁: the estimate is ≥ gbcon's own
            rcond = _lapack.gbcon(storage[k], piv[k], self.kl, self.ku, anorm)
            kept[k] = rcond > 0.0 and 1.0 / rcond <= limit
        z = np.where(kept[:, None, None], z, np.nan)
        out = np.empty((b, N, q))
        out[:, self.perm] = z
        return out, self._residual(values, z, rhs, transpose)

    def _residual(self, values: FloatArray, z: FloatArray, rhs: FloatArray,
                  transpose: bool) -> FloatArray:
        """max over columns of ‖J z − rhs‖ / ‖rhs‖ per element (Jᵀ with ``transpose``), in
        band positions; inf where z is not finite."""
        in_at = self.rows if transpose else self.cols
        by, starts = (self.by_col, self.col_starts) if transpose else (self.by_row, self.row_starts)
        products = values.T[:, :, None] * z[:, in_at]  # (b, nnz, q)
        res = np.add.reduceat(products[:, by], starts, axis=1) - rhs
        ratio = np.vecdot(res, res, axis=1) / np.maximum(np.vecdot(rhs, rhs, axis=1), 1e-300)
        residual = np.sqrt(ratio.max(axis=1, initial=0.0))
        return np.where(residual <= np.inf, residual, np.inf)  # NaN → inf
