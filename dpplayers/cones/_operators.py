"""Blocks of DPi: one linear operator per group of cones, and their block-diagonal sum."""

from __future__ import annotations

import abc
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .._cached import cached
from ._layout import SQRT2, Array, Index, lower_triangle, smat, svec, svec_places


class AbstractBlockOperator(abc.ABC):
    """k square d x d blocks of DPi, one per cone of a group; acts on stacks (k, d, m)."""

    @abc.abstractmethod
    def mv(self, dx: Array) -> Array:
        """Apply each block to its slice: (k, d, m) -> (k, d, m)."""

    @abc.abstractmethod
    def as_matrices(self) -> Array:
        """The blocks as a dense (k, d, d) array."""

    def take(self, blocks: slice) -> AbstractBlockOperator:
        """The operator of a subset of the blocks (every field is per block)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[blocks]
                                            for f in dataclasses.fields(self)})


@dataclass(frozen=True, eq=False)
class DiagonalBlocks(AbstractBlockOperator):
    """Diagonal blocks (zero, free and nonnegative cones): ``diag`` is (k, d)."""

    diag: Array

    def mv(self, dx: Array) -> Array:
        return self.diag[:, :, None] * dx

    def as_matrices(self) -> Array:
        d = self.diag.shape[1]
        return self.diag[:, :, None] if d == 1 else self.diag[:, :, None] * np.eye(d)


@dataclass(frozen=True, eq=False)
class DenseBlocks(AbstractBlockOperator):
    """Dense blocks (exponential and power cones and their duals): ``J`` is (k, d, d)."""

    J: Array

    def mv(self, dx: Array) -> Array:
        return self.J @ dx

    def as_matrices(self) -> Array:
        return self.J


#: SOC and PSD blocks of order up to this apply their dense matrices (written out once and
#: kept, as the dense solve needs them anyway) rather than their closed forms, whose ~10
#: numpy calls cost more than a small dense product. PSD blocks up to this order also write
#: those matrices out by one product over every column (:meth:`PSDBlocks._matrices`: the
#: column choice above it costs ncm's order-55 blocks 8–11% of its backward, and saves
#: psd_proj's order-210 ones 60–75% of theirs).
DENSE_MV_MAX = 64


@dataclass(frozen=True, eq=False)
class SOCBlocks(AbstractBlockOperator):
    """Second-order cone blocks [[p, q xbar^T], [q xbar, c I + e xbar xbar^T]], all (k,) but xbar.

    This covers the three regions (p=c=1, q=e=0 inside; all zero in the polar; else the
    rank-one-corrected middle formula) and costs O(kd) per product instead of O(kd^2).
    """

    p: Array
    q: Array
    c: Array
    e: Array
    xbar: Array

    def mv(self, dx: Array) -> Array:
        if self.xbar.shape[1] < DENSE_MV_MAX:
            return self.as_matrices() @ dx
        dt, dxs = dx[:, :1, :], dx[:, 1:, :]
        s = np.einsum("ki,kim->km", self.xbar, dxs)[:, None, :]
        xb = self.xbar[:, :, None]
        top = self.p[:, None, None] * dt + self.q[:, None, None] * s
        rest = (self.q[:, None, None] * xb * dt + self.c[:, None, None] * dxs
                + self.e[:, None, None] * xb * s)
        return np.concatenate([top, rest], axis=1)

    def as_matrices(self) -> Array:
        """The blocks written out from their closed form (not ``mv`` on an identity); kept."""
        return self._matrices

    def diagonal_plus_rank_two(self) -> tuple[Array, Array, Array, Array]:
        """Each block as diag(g) + U C Uᵀ with U = [e₀, (0, xbar)] and C = [[0, q], [q, e]]:
        (g (k, d+1), xbar (k, d), q (k,), e (k,)), g = (p, c, …, c). Exact in every region
        (inside and in the polar q = e = 0); J keeps O(d) entries per block this way
        (:mod:`dpplayers._derivative.lifting`)."""
        k, d = self.xbar.shape
        g = np.empty((k, d + 1))
        g[:, 0] = self.p
        g[:, 1:] = self.c[:, None]
        return g, self.xbar, self.q, self.e

    @cached
    def _matrices(self) -> Array:
        k, d = self.xbar.shape
        out = np.empty((k, d + 1, d + 1))
        out[:, 0, 0] = self.p
        out[:, 0, 1:] = out[:, 1:, 0] = self.q[:, None] * self.xbar
        np.multiply((self.e[:, None] * self.xbar)[:, :, None], self.xbar[:, None, :],
                    out=out[:, 1:, 1:])
        out.reshape(k, -1)[:, d + 2 :: d + 2] += self.c[:, None]  # the diagonal below (0, 0)
        return out


@dataclass(frozen=True, eq=False)
class PSDBlocks(AbstractBlockOperator):
    """PSD blocks: dX -> V (B o (V^T dX V)) V^T in svec coordinates, V the eigenvectors."""

    V: Array
    B: Array

    def mv(self, dx: Array) -> Array:
        if dx.shape[1] <= DENSE_MV_MAX:
            return self.as_matrices() @ dx
        V, Vt = self.V[:, None], np.swapaxes(self.V, 1, 2)[:, None]
        inner = self.B[:, None] * (Vt @ smat(np.swapaxes(dx, 1, 2)) @ V)  # (k, m, n, n)
        return np.swapaxes(svec(V @ inner @ Vt), 1, 2)

    def as_matrices(self) -> Array:
        """The blocks (k, d, d) in svec coordinates; kept."""
        return self._matrices

    @cached
    def _matrices(self) -> Array:
        # W diag(b) W^T: W's columns are the svec of the orthonormal basis (v_i v_j^T + v_j v_i^T)
        # / sqrt(2), i > j, and v_i v_i^T of symmetric matrices; b the matching entries of B.
        # W = diag(r) U diag(1 / c) with U[p, q] = V[a, i] V[b, j] + V[a, j] V[b, i] for
        # svec entries p = (a, b) and q = (i, j), so W diag(b) W^T = r r^T o (U diag(b / c^2) U^T).
        # b is 0 or 1 on most columns (eigenvalue pairs of one sign) and W W^T = I, so a
        # block above DENSE_MV_MAX sums over its columns with b != 0 (as is) or those with
        # b != 1 (it is then I - W diag(1 - b) W^T), whichever are fewer (the spectraplex
        # projection's 210 x 210 blocks: 39-105 of 210 columns). Blocks that sum over the
        # same columns (eigh sorts the eigenvalues: those with as many of each sign) are
        # computed together, each as it would be alone, bit for bit. Smaller blocks sum
        # over every column in one product: the choice's numpy calls cost more there
        # (nearest correlation 10 x 10, order 55: backward 1.08-1.11x at batches 1-8).
        k, n = self.V.shape[:2]
        b = self.B.reshape(k, n * n).take(svec_places(n), 1)
        if b.shape[1] <= DENSE_MV_MAX:
            return _every_column(self.V, b)
        complement = np.count_nonzero(b != 1.0, axis=1) < np.count_nonzero(b != 0.0, axis=1)
        weights = np.where(complement[:, None], 1.0 - b, b)
        keep = weights != 0.0
        if (keep == keep[0]).all() and (complement == complement[0]).all():
            return _sum_over(self.V, bool(complement[0]), keep[0], weights)
        packed = np.packbits(np.column_stack([complement, keep]), axis=1)
        _, first, group = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(),
                                    return_index=True, return_inverse=True)
        out = np.empty((k, b.shape[1], b.shape[1]))
        for g, f in enumerate(first):
            blocks = np.flatnonzero(group == g)
            out[blocks] = _sum_over(self.V[blocks], bool(complement[f]), keep[f], weights[blocks])
        return out


def _every_column(V: Array, b: Array) -> Array:
    """r r^T o (U diag(b / c^2) U^T) per block over all of U's columns (k, d, d), U from
    four gathers of V at fixed places (see :meth:`PSDBlocks._matrices`)."""
    k, n = V.shape[:2]
    ai, bj, aj, bi = _kronecker_places(n)
    c2_inverse, outer = _psd_basis(n)
    flat = V.reshape(k, n * n)
    d = c2_inverse.size
    U = (flat.take(ai, 1) * flat.take(bj, 1) + flat.take(aj, 1) * flat.take(bi, 1))
    U = U.reshape(k, d, d)
    return outer * ((U * (b * c2_inverse)[:, None, :]) @ np.swapaxes(U, 1, 2))


def _sum_over(V: Array, complement: bool, columns: npt.NDArray[np.bool_],
              weights: Array) -> Array:
    """Blocks that sum over the same ``columns`` (a mask), with their weights (k, d): of
    W diag(b) Wᵀ, or with ``complement`` of I − W diag(1 − b) Wᵀ."""
    columns = np.flatnonzero(columns)
    out = _symmetric_kronecker(V, columns, weights.take(columns, 1))
    if complement:  # in place: I − the sum
        np.negative(out, out=out)
        out.reshape(out.shape[0], -1)[:, :: out.shape[1] + 1] += 1.0
    return out


def _symmetric_kronecker(V: Array, columns: Index, weights: Array) -> Array:
    """r r^T o (U_Q diag(w / c^2) U_Q^T) per block (k, d, d): U's columns Q = ``columns``
    with the blocks' weights w (k, |Q|) (see :meth:`PSDBlocks._matrices`). With every
    weight non-negative (B's divided differences lie in [0, 1]), one symmetric product of
    U_Q diag(sqrt(w) / c) by itself (BLAS syrk: half the multiplies)."""
    rows, cols = lower_triangle(V.shape[1])
    c2_inverse, outer = _psd_basis(V.shape[1])
    # the eigenvectors v_i, v_j of each column q = (i, j) in Q, (k, n, |Q|); then their rows
    # a and b of each svec entry p = (a, b) by whole rows (row takes are contiguous copies)
    Vi, Vj = V.take(rows[columns], 2), V.take(cols[columns], 2)
    U = Vi.take(rows, 1) * Vj.take(cols, 1)  # (k, d, |Q|)
    U += Vj.take(rows, 1) * Vi.take(cols, 1)
    scale = weights * c2_inverse[columns]
    if np.all(scale >= 0.0):
        U *= np.sqrt(scale)[:, None, :]
        out = U @ np.swapaxes(U, 1, 2)
    else:
        out = (U * scale[:, None, :]) @ np.swapaxes(U, 1, 2)
    return np.multiply(out, outer, out=out)


@dataclass(frozen=True, eq=False)
class ProjectionDerivative:
    """DPi at a point of a product cone: a symmetric block-diagonal linear operator.

    ``blocks`` pairs each group's block operator with the (k, d) positions of its cones.
    """

    size: int
    blocks: tuple[tuple[AbstractBlockOperator, Index], ...]

    def mv(self, dv: npt.ArrayLike) -> Array:
        """DPi dv for dv of shape (size,) or (size, m)."""
        dv = np.asarray(dv, dtype=float)
        if dv.ndim not in (1, 2) or dv.shape[0] != self.size:
            raise ValueError(f"Expected an array of shape ({self.size},) or ({self.size}, m), "
                             f"got shape {dv.shape}.")
        columns = dv.reshape(self.size, -1)
        out = np.zeros_like(columns)
        for op, idx in self.blocks:
            out[idx] = op.mv(columns[idx])
        return out.reshape(dv.shape)

    def block_values(self) -> Array:
        """The block entries as one vector: each group's blocks in turn, each row-major
        (``ProductCone.block_entries`` order; one column of the batched operator's)."""
        parts = [op.as_matrices().ravel() for op, _ in self.blocks]
        return np.concatenate(parts) if parts else np.zeros(0)

    def locally_constant(self) -> bool:
        """Every block is 0 or I: the point lies inside the cone or inside its polar in
        each block (a 1×1 block is 0 or 1), so DPi is constant around it, as a polyhedral
        cone's is everywhere."""
        for op, idx in self.blocks:
            M = op.as_matrices()  # (k, d, d)
            corner = M[:, :1, :1]
            if not (np.all((corner == 0.0) | (corner == 1.0))
                    and np.array_equal(M, corner * np.eye(idx.shape[1]))):
                return False
        return True

    @property
    def T(self) -> ProjectionDerivative:
        """The transpose; DPi is symmetric (a projection onto a convex set is a gradient)."""
        return self

    def as_matrix(self) -> sp.csc_array:
        """The operator as a sparse block-diagonal matrix with the same action as `mv`."""
        rows, cols, vals = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)], [np.zeros(0)]
        for op, idx in self.blocks:
            J = op.as_matrices()
            rows.append(np.broadcast_to(idx[:, :, None], J.shape).ravel())
            cols.append(np.broadcast_to(idx[:, None, :], J.shape).ravel())
            vals.append(J.ravel())
        matrix = sp.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(self.size, self.size)).tocsc()
        matrix.eliminate_zeros()
        return matrix



@dataclass(frozen=True, eq=False)
class BlockEntries:
    """Where the entries of DPi's blocks are, in ``block_values`` order (each group's
    blocks in turn, each row-major): row and column; and, as each row's entries are one
    run, where each run starts and which row it is."""

    rows: Index
    cols: Index
    starts: Index  # the first entry of each row's run, ...
    run_rows: Index | None  # ... the rows of the runs in turn (None: 0, 1, 2, ... in order)

    @classmethod
    def of(cls, size: int, positions: tuple[Index, ...]) -> BlockEntries:
        """For each group's (k, d) positions (together, each row once)."""
        rows = [np.broadcast_to(idx[:, :, None], (*idx.shape, idx.shape[1])).ravel()
                for idx in positions]
        cols = [np.broadcast_to(idx[:, None, :], (*idx.shape, idx.shape[1])).ravel()
                for idx in positions]
        rows = np.concatenate([np.zeros(0, np.intp), *rows]).astype(np.intp)
        cols = np.concatenate([np.zeros(0, np.intp), *cols]).astype(np.intp)
        starts = np.flatnonzero(np.diff(rows, prepend=-1) != 0)
        run_rows = rows[starts]
        ordered = np.array_equal(run_rows, np.arange(size))
        return cls(rows, cols, starts, None if ordered else run_rows)

    def sum_by_row(self, terms: Array) -> Array:
        """Each row's sum of ``terms`` (entries, ...), (size, ...): one ``reduceat`` over
        the runs (a sparse product costs several µs more of scipy's Python per call)."""
        sums = np.add.reduceat(terms, self.starts, axis=0) if terms.shape[0] else terms
        if self.run_rows is None:
            return sums
        out = np.empty_like(sums)
        out[self.run_rows] = sums
        return out


@dataclass(frozen=True, eq=False)
class BatchedProjectionDerivative:
    """DPi at b points at once: each group's block operator holds that group's cones for
    every point, point-major (point j's k cones are blocks j*k .. (j+1)*k - 1). Products and
    block values for the whole batch cost one call per group instead of one per point."""

    size: int
    count: int
    blocks: tuple[tuple[AbstractBlockOperator, Index], ...]
    entries: BlockEntries | None = None  # needed by ``mv(..., by_values=True)``

    def element(self, j: int) -> ProjectionDerivative:
        """DPi at point j alone."""
        if self.count == 1:
            return ProjectionDerivative(self.size, self.blocks)
        return ProjectionDerivative(self.size, tuple(
            (op.take(slice(j * idx.shape[0], (j + 1) * idx.shape[0])), idx)
            for op, idx in self.blocks))

    def block_values(self) -> Array:
        """Every point's block entries, (entries, b): column j is point j's blocks in the
        order of ``ProjectionDerivative.blocks``, each row-major. Computed once."""
        return self._block_values

    @cached
    def _block_values(self) -> Array:
        parts = [op.as_matrices().reshape(self.count, -1) for op, _ in self.blocks]
        return np.concatenate(parts, axis=1).T if parts else np.zeros((0, self.count))

    def mv(self, dv: Array, by_values: bool = False) -> Array:
        """DPi_j dv[:, j] for dv (size, b, m): every point's own block-diagonal product.
        ``by_values``: from the block values (one gather, product and sum for all groups;
        cheaper where the dense solve computes those values anyway) instead of each
        group's own product."""
        if dv.ndim != 3 or dv.shape[:2] != (self.size, self.count):
            raise ValueError(f"Expected an array of shape ({self.size}, {self.count}, m), "
                             f"got shape {dv.shape}.")
        b, m = self.count, dv.shape[2]
        if by_values and self.entries is not None:
            E = self.entries
            return E.sum_by_row(self.block_values()[:, :, None] * dv.take(E.cols, 0))
        out = np.empty_like(dv)  # every row of dv is in one block
        for op, idx in self.blocks:
            k, d = idx.shape
            if b == 1:  # (k, d, 1, m) is already point-major
                out[idx] = op.mv(dv[idx].reshape(k, d, m)).reshape(k, d, 1, m)
                continue
            x = dv[idx].transpose(2, 0, 1, 3).reshape(b * k, d, m)  # (k, d, b, m) point-major
            out[idx] = op.mv(x).reshape(b, k, d, m).transpose(1, 2, 0, 3)
        return out


@functools.cache
def _kronecker_places(n: int) -> tuple[Index, Index, Index, Index]:
    """For :func:`_every_column`: where U's four factors are in V (row-major, each (d·d,)
    over (p, q))."""
    rows, cols = lower_triangle(n)
    a, b, i, j = rows[:, None], cols[:, None], rows[None, :], cols[None, :]
    return tuple((x * n + y).ravel() for x, y in ((a, i), (b, j), (a, j), (b, i)))


@functools.cache
def _psd_basis(n: int) -> tuple[Array, Array]:
    """For :meth:`PSDBlocks.as_matrices`: 1 / c^2 per column q and r r^T, with r = 1 on the
    diagonal and sqrt(2) off it and c = 2 on the diagonal and sqrt(2) off it."""
    rows, cols = lower_triangle(n)
    diag = rows == cols
    r = np.where(diag, 1.0, SQRT2)
    return 1.0 / np.where(diag, 2.0, SQRT2) ** 2, np.outer(r, r)
