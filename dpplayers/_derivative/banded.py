"""J as a band matrix, possibly with a dense border: where J's unknowns, put in reverse
Cuthill–McKee order once per program, leave every entry within a narrow band (an MPC's
stages, a chain of differences, a cone per entry of a vector), or do so once a few dense
rows and columns are set aside as a border (a fitted model's coefficients, which meet
every sample's rows), each element's J is factorised by LAPACK's band LU with partial
pivoting (gbtrf), in place of the batched executor's dense S and LU of what its pivots
leave (sparsemax: S of order 201, an LU of order 1; J of order 401 within 2 diagonals and a
border of one) or, above its limit, a sparse LU per element (the entropy workload's
SuperLU of order 900).

The band LU of an MPC's J (order 288, 21 sub- and super-diagonals) takes 47 µs where the
dense LU of its reduced J (order 163) takes 157 µs, and the entries go into band storage by
one scatter for the whole batch instead of the pair and diagonal eliminations' products.
Partial pivoting stays within the band (gbtrf keeps kl more super-diagonals for it), so the
answer is that of a dense LU of J. With a border, J = [[A, B], [C, D]] (A the band, D the
border's k × k block), W = A⁻¹B and S = D − C W, as in :mod:`.bordered`:

    J z = r:   z_A⁰ = A⁻¹ r_A,  S z_B = r_B − C z_A⁰,  z_A = z_A⁰ − W z_B;
    Jᵀ z = r:  Sᵀ z_B = r_B − Wᵀ r_A,  z_A = A⁻ᵀ (r_A − Cᵀ z_B);

pivoting then stays inside A and inside S, and the residual check on J itself catches an
element where that loses accuracy. Each solve carries the fixed probe as one more column:
an element whose probe estimate of cond(J) is suspect is kept only where gbcon's estimate
is within the program's limit (without a border; with one it is declined); singular,
suspect or not cleanly solved elements are reported with an infinite residual, for the
other executors to take (as ``DenseBatch``'s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from .. import _lapack
from .conditioning import PROBE_SUSPECT, batch_residuals, probe

Index = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

#: An unknown whose row and column hold more than this many times the median count of
#: entries goes to the border (logistic regression's 10 coefficients: 300 and more
#: against a median of 9; a p-norm fit's 20 variables, 130 against 28).
BORDER_DEGREE = 4.0


@dataclass(frozen=True, eq=False)
class BandLayout:
    """Where each entry of J (``KKTPattern.entries`` order) goes: J's unknowns permuted to
    ``perm`` (position p holds unknown perm[p]), the first ``order − border`` the band A,
    the last ``border`` the dense border; each entry in A's band storage or in the dense
    B (rest × border), C (border × rest) or D (border × border)."""

    order: int
    border: int
    kl: int
    ku: int
    perm: Index
    parts: tuple[tuple[Index, Index], ...]  # (entries, flat places) in A's band storage,
    # and in B, C and D (each C-ordered per element); empty for B, C, D without a border
    rows: Index  # each entry's row and column in permuted positions
    cols: Index
    by_row: Index  # entries sorted by row, and where each row's run starts
    row_starts: Index
    by_col: Index
    col_starts: Index
    #: per element: the band LU's multiply-adds and its storage's entries (with a border,
    #: also W's solves, S's product and its LU)
    work: float

    @property
    def ldab(self) -> int:
        return 2 * self.kl + self.ku + 1

    @classmethod
    def of(cls, size: int, rows: Index, cols: Index, batched_work: float) -> BandLayout | None:
        """The layout for J of order ``size`` with entries at (rows, cols), without a border
        or with one, whichever costs less per element (:attr:`work`), or None where that
        exceeds ``batched_work``, the batched executor's per element (its dense S and LU:
        :meth:`~.plan.EliminationPlan.batched_work`). Measured where it is taken
        (``benchmarks/band_route.py``, backward, band / route off, batches 1–128):
        total-variation denoising of 20–400 points 0.11–0.86, MPCs of horizon 8–40
        0.24–0.74, entropy terms on 30–300 entries 0.25–0.69, logistic regression on
        25–400 samples (a border of 10) 0.30–0.67, sparsemax on 25–300 entries (a border
        of one) 0.14–1.04; entropy on 3 and 10 entries (J of 18 and 60) 0.52–1.14, under
        0.4 ms at batch 1; MPCs of horizon 3 or 5 and sparsemax on 10 or 20 entries are
        not taken."""
        degree = np.bincount(rows, minlength=size) + np.bincount(cols, minlength=size)
        if degree.min() == 0:
            return None  # an empty row or column: J is singular, leave it to Direct
        dense = np.flatnonzero(degree > BORDER_DEGREE * max(float(np.median(degree)), 2.0))
        candidates = [cls._build(size, rows, cols, np.zeros(0, np.intp))]
        if 0 < dense.size < size // 2:
            candidates.append(cls._build(size, rows, cols, dense))
        best = min((c for c in candidates if c is not None), key=lambda c: c.work, default=None)
        return best if best is not None and best.work <= batched_work else None

    @classmethod
    def _build(cls, size: int, rows: Index, cols: Index, border: Index) -> BandLayout | None:
        keep = np.ones(size, bool)
        keep[border] = False
        rest = np.flatnonzero(keep)
        R, k = rest.size, border.size
        inner = keep[rows] & keep[cols]
        at = np.full(size, -1)
        at[rest] = np.arange(R)
        a_r, a_c = at[rows[inner]], at[cols[inner]]
        pattern = sp.csr_array((np.ones(a_r.size), (a_r, a_c)), shape=(R, R))
        order = reverse_cuthill_mckee((pattern + pattern.T).tocsr(), symmetric_mode=True)
        perm = np.concatenate([rest[np.asarray(order, np.intp)], border])
        position = np.empty(size, np.intp)
        position[perm] = np.arange(size)
        r, c = position[rows], position[cols]
        in_a = (r < R) & (c < R)
        if np.bincount(r[in_a], minlength=R).min(initial=1) == 0 or \
                np.bincount(c[in_a], minlength=R).min(initial=1) == 0:
            return None  # A has an empty row or column: singular
        d = r[in_a] - c[in_a]
        kl, ku = int(max(d.max(initial=0), 0)), int(max((-d).max(initial=0), 0))
        ldab = 2 * kl + ku + 1
        parts = [(np.flatnonzero(in_a), c[in_a] * ldab + (kl + ku + r[in_a] - c[in_a]))]
        for mask, place in (((r < R) & (c >= R), lambda i, j: i * k + (j - R)),  # B
                            ((r >= R) & (c < R), lambda i, j: (i - R) * R + j),  # C
                            ((r >= R) & (c >= R), lambda i, j: (i - R) * k + (j - R))):  # D
            parts.append((np.flatnonzero(mask), place(r[mask], c[mask])))
        work = R * kl * (kl + ku + 1) + R * ldab  # the band LU's multiply-adds, its storage
        if k:  # W = A⁻¹B (k band solves), S = D − C W (a dense product), S's LU
            work += R * ldab * k + R * k * k + k**3 / 3.0
        by_row, by_col = np.argsort(r, kind="stable"), np.argsort(c, kind="stable")
        return cls(size, k, kl, ku, perm, tuple(parts), r, c, by_row,
                   np.searchsorted(r[by_row], np.arange(size)), by_col,
                   np.searchsorted(c[by_col], np.arange(size)), float(work))

    def solve(self, values: FloatArray, rhs: FloatArray, transpose: bool,
              limit: float | None) -> tuple[FloatArray, FloatArray]:
        """values (nnz, b) of b elements' J, rhs (b, N, q) ↦ (z, relative residual per
        element; inf where J is singular or possibly near-singular beyond ``limit``)."""
        with np.errstate(all="ignore"):  # a singular element's non-finite z: declined
            return self._solve(values, rhs, transpose, limit)

    def _solve(self, values: FloatArray, rhs: FloatArray, transpose: bool,
               limit: float | None) -> tuple[FloatArray, FloatArray]:
        b, N, q = rhs.shape
        R, k = N - self.border, self.border
        rhs = rhs.take(self.perm, 1)  # in permuted positions
        storage = np.zeros((b, R * self.ldab))
        at, place = self.parts[0]
        storage[:, place] = values[at].T
        storage = storage.reshape(b, R, self.ldab)
        piv, nonsingular = _lapack.gbtrf(storage, self.kl, self.ku)
        columns = np.empty((b, q + 1, N))  # each element's right-hand sides transposed
        columns[:, :q] = rhs.transpose(0, 2, 1)
        columns[:, q] = probe(N)
        if k:
            z = self._bordered(values, storage, piv, columns, transpose)
            nonsingular &= np.isfinite(z).all(axis=(1, 2))
        else:
            _lapack.gbtrs(storage, piv, columns, self.kl, self.ku, transpose)
            z = columns
        # the probe estimate ‖J‖_F ‖J⁻¹g‖ / ‖g‖ (‖g‖² = N) against PROBE_SUSPECT, as the
        # batched dense LU's; a suspect J is kept only by gbcon's estimate within ``limit``
        norm_sq = np.einsum("ij,ij->j", values, values)
        probed = z[:, q]
        kept = nonsingular & (norm_sq * np.vecdot(probed, probed) <= PROBE_SUSPECT**2 * N)
        suspects = [] if limit is None or k else np.flatnonzero(nonsingular & ~kept).tolist()
        for e in suspects:
            anorm = math.sqrt(N * norm_sq[e])  # ≥ ‖J‖₁: the estimate is ≥ gbcon's own
            rcond = _lapack.gbcon(storage[e], piv[e], self.kl, self.ku, anorm)
            kept[e] = rcond > 0.0 and 1.0 / rcond <= limit
        z = np.where(kept[:, None, None], z[:, :q].transpose(0, 2, 1), np.nan)
        out = np.empty((b, N, q))
        out[:, self.perm] = z
        return out, self._residual(values, z, rhs, transpose)

    def _bordered(self, values: FloatArray, storage: FloatArray, piv: npt.NDArray[np.int32],
                  columns: FloatArray, transpose: bool) -> FloatArray:
        """The bordered solve (see the module) of ``columns`` (b, p, N), each element's
        right-hand sides transposed, with A's factors in ``storage``; (b, p, N) so."""
        b, p, N = columns.shape
        R, k = N - self.border, self.border
        blocks = []
        for (at, place), shape in zip(self.parts[1:], ((R, k), (k, R), (k, k))):
            block = np.zeros((b, shape[0] * shape[1]))
            block[:, place] = values[at].T
            blocks.append(block.reshape(b, *shape))
        B, C, D = blocks
        r_A, r_B = columns[:, :, :R], columns[:, :, R:].transpose(0, 2, 1)  # (b, p, R), (b, k, p)
        out = np.empty((b, p, N))
        if not transpose:  # W and z_A⁰ from one band solve
            X = np.concatenate([B.transpose(0, 2, 1), r_A], axis=1)
            _lapack.gbtrs(storage, piv, X, self.kl, self.ku, False)
            Wt, z0 = X[:, :k], X[:, k:]  # Wᵀ (b, k, R), z_A⁰ transposed (b, p, R)
            z_B = _solve_small(D - C @ Wt.transpose(0, 2, 1), r_B - C @ z0.transpose(0, 2, 1))
            out[:, :, :R] = z0 - (Wt.transpose(0, 2, 1) @ z_B).transpose(0, 2, 1)
        else:
            Wt = np.ascontiguousarray(B.transpose(0, 2, 1))
            _lapack.gbtrs(storage, piv, Wt, self.kl, self.ku, False)
            S = D - C @ Wt.transpose(0, 2, 1)
            z_B = _solve_small(S.transpose(0, 2, 1), r_B - Wt @ r_A.transpose(0, 2, 1))
            X = np.ascontiguousarray(r_A - (C.transpose(0, 2, 1) @ z_B).transpose(0, 2, 1))
            _lapack.gbtrs(storage, piv, X, self.kl, self.ku, True)
            out[:, :, :R] = X
        out[:, :, R:] = z_B.transpose(0, 2, 1)
        return out

    def _residual(self, values: FloatArray, z: FloatArray, rhs: FloatArray,
                  transpose: bool) -> FloatArray:
        """max over columns of ‖J z − rhs‖ / ‖rhs‖ per element (Jᵀ with ``transpose``), in
        permuted positions; inf where z is not finite."""
        in_at = self.rows if transpose else self.cols
        by, starts = (self.by_col, self.col_starts) if transpose else (self.by_row, self.row_starts)
        products = values.T[:, :, None] * z[:, in_at]  # (b, nnz, q)
        res = np.add.reduceat(products[:, by], starts, axis=1) - rhs
        return batch_residuals(np.vecdot(res, res, axis=1), rhs)


def _solve_small(S: FloatArray, rhs: FloatArray) -> FloatArray:
    """S⁻¹ rhs for a stack of small dense S (b, k, k), rhs (b, k, p): one numpy call, or,
    where some S is singular, element by element with NaN for those."""
    try:
        return np.linalg.solve(S, rhs)
    except np.linalg.LinAlgError:
        out = np.full(rhs.shape, np.nan)
        for e in range(S.shape[0]):
            try:
                out[e] = np.linalg.solve(S[e], rhs[e])
            except np.linalg.LinAlgError:
                continue
        return out
