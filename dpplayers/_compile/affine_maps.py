"""Affine maps θ̃ = [θ; 1] ↦ cone-program data (C_P, C_A, C_b, C_c), one sparse matrix each."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .._sparse import CACHE_BYTES
from .parameters import ParameterLayout

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AffineMap:
    """A map θ̃ = [θ; 1] ↦ data, as a sparse matrix (:class:`StackedMaps` applies the linear
    parts of several at once, and their transposes)."""

    matrix: sp.csr_array  # (rows, p + 1)

    def __call__(self, theta: FloatArray) -> FloatArray:
        """θ̃ (p+1, B) → data (rows, B)."""
        return np.asarray(self.matrix @ theta)


    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @functools.cached_property
    def is_constant(self) -> bool:
        """True when the data does not depend on θ."""
        return self.matrix[:, :-1].nnz == 0

    def entering(self, layout: ParameterLayout) -> tuple[str, ...]:
        """Names of parameters with at least one nonzero coefficient in this map."""
        cols = np.unique(self.matrix.tocoo().col)
        return tuple(
            s.name for s in layout.specs
            if np.any((cols >= s.offset) & (cols < s.offset + s.size))
        )


@dataclass(frozen=True)
class Gather:
    """y = scale ⊙ x[source]: a linear map whose every row holds at most one entry (a row
    with none reads entry 0 times 0); several times cheaper per call than a sparse
    product at these sizes. ``scale`` None: every coefficient is 1."""

    source: npt.NDArray[np.intp]
    scale: FloatArray | None  # (rows, 1)
    shape: tuple[int, int]

    def __call__(self, x: FloatArray) -> FloatArray:
        picked = x.take(self.source, 0)  # a fresh array: scaled in place
        if self.scale is not None:
            picked *= self.scale
        return picked


@dataclass(frozen=True)
class Product:
    """y = M x by a sparse product: the general linear map."""

    matrix: sp.csr_array

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def __call__(self, x: FloatArray) -> FloatArray:
        return np.asarray(self.matrix @ x)


@dataclass(frozen=True)
class PairGather:
    """y = s₁ ⊙ x[i₁] + s₂ ⊙ x[i₂]: a linear map whose every row holds at most two entries
    (P's upper triangle read from a symmetric parameter Q: (Q_ij + Q_ji)/2), by two gathers,
    as a sparse product sums them (in column order), without its dispatch (qp50's data map:
    7.6 against 12 µs). A row with one entry reads entry 0 times 0 for the second, so x must
    be finite: only :meth:`StackedMaps.__call__` uses it, on checked parameter values."""

    first: npt.NDArray[np.intp]
    first_scale: FloatArray  # (rows, 1)
    second: npt.NDArray[np.intp]
    second_scale: FloatArray  # (rows, 1): 0 where a row has one entry
    shape: tuple[int, int]

    @classmethod
    def of(cls, matrix: sp.csr_array) -> PairGather | None:
        """The pair gather of a CSR matrix with sorted indices, or None where a row holds
        more than two entries."""
        counts = np.diff(matrix.indptr)
        if counts.size and counts.max() > 2:
            return None
        start = matrix.indptr[:-1]
        last = max(matrix.nnz - 1, 0)
        one, two = counts >= 1, counts == 2
        data = matrix.data if matrix.nnz else np.zeros(1)
        indices = matrix.indices if matrix.nnz else np.zeros(1, np.intp)
        first = np.where(one, indices[np.minimum(start, last)], 0)
        second = np.where(two, indices[np.minimum(start + 1, last)], 0)
        return cls(first.astype(np.intp), np.where(one, data[np.minimum(start, last)], 0.0)[:, None],
                   second.astype(np.intp),
                   np.where(two, data[np.minimum(start + 1, last)], 0.0)[:, None], matrix.shape)

    def __call__(self, x: FloatArray) -> FloatArray:
        y = x.take(self.first, 0)
        y *= self.first_scale
        z = x.take(self.second, 0)
        z *= self.second_scale
        y += z
        return y


LinearMap = Gather | Product


def linear_map(matrix: sp.spmatrix | sp.sparray) -> LinearMap:
    """The cheapest strategy for x ↦ M x, picked once when a map is built: a
    :class:`Gather` where every row of M holds at most one entry (cvxpy's usual maps copy
    each datum from one parameter entry, scaled), else a :class:`Product`."""
    M = sp.csr_array(matrix)
    M.sum_duplicates()
    counts = np.diff(M.indptr)
    if np.any(counts > 1):
        return Product(M)
    source = np.zeros(M.shape[0], np.intp)
    scale = np.zeros((M.shape[0], 1))
    rows = np.flatnonzero(counts)
    source[rows], scale[rows, 0] = M.indices, M.data
    unit = rows.size == M.shape[0] and np.all(scale == 1.0)
    return Gather(source, None if unit else scale, M.shape)


@dataclass(frozen=True)
class StackedMaps:
    """Several affine maps evaluated together: those that depend on θ as one linear map
    (one dispatch instead of one per map) plus their constant column, the constant ones
    precomputed as one column. The linear part and its transpose are :func:`linear_map`
    strategies, picked when built."""

    forward: LinearMap | None  # dθ ↦ the θ-dependent maps' rows, stacked
    backward: LinearMap | None  # its transpose
    constant: FloatArray | None  # (rows, 1): their constant column
    parts: tuple[tuple[int, int] | FloatArray, ...]  # per map: (start, stop) rows or its constant
    _p: int  # parameter entries (θ without the constant)

    @classmethod
    def build(cls, maps: Sequence[AffineMap | None]) -> StackedMaps:
        parts: list[tuple[int, int] | FloatArray] = []
        rows: list[sp.csr_array] = []
        start, p = 0, 0
        for cmap in maps:
            if cmap is not None:
                p = cmap.matrix.shape[1] - 1
            if cmap is None:
                parts.append(np.zeros((0, 1)))
            elif cmap.is_constant:
                parts.append(cmap.matrix[:, [-1]].toarray())
            else:
                rows.append(cmap.matrix)
                parts.append((start, start + cmap.matrix.shape[0]))
                start += cmap.matrix.shape[0]
        if not rows:
            return cls(None, None, None, tuple(parts), p)
        varying = sp.csr_array(sp.vstack(rows, format="csr"))
        linear = sp.csr_array(varying[:, :-1])
        return cls(linear_map(linear), linear_map(linear.T), varying[:, [-1]].toarray(),
                   tuple(parts), p)

    def __call__(self, theta: FloatArray) -> tuple[FloatArray, ...]:
        """θ̃ = [θ; 1] (p+1, B) → each map's data (rows, B), or its constant column."""
        if self.forward is None:
            return tuple(self.parts)
        affine, on_tilde, rows, added = self._affine
        values = affine(theta if on_tilde else theta[:-1])  # a fresh array: added to in place
        if rows is not None:
            values[rows] += added
        return tuple([values[p] if p.__class__ is slice else p for p in self._slices])

    @functools.cached_property
    def _affine(self) -> tuple[LinearMap | PairGather, bool, slice | npt.NDArray[np.intp] | None,
                               FloatArray | None]:
        """How :meth:`__call__` evaluates the θ-dependent rows with as few passes over them
        as it can: (a map, whether it reads θ̃ = [θ; 1] (else θ), the rows whose constant
        is added after it (None: none), those constants). A gather reads θ̃, so a row
        with no parameter entry picks θ̃'s 1 scaled by its constant; only rows with both
        an entry and a constant get an addition. A product of at most two entries per row
        is a :class:`PairGather`, and adds the constant column only where it is not all zero
        (an OptNet QP's never is)."""
        const = self.constant
        forward = self.forward
        if isinstance(forward, Gather):
            scale = forward.scale if forward.scale is not None else np.ones_like(const)
            empty = scale[:, 0] == 0.0  # no entry (or a zero coefficient): reads the 1
            source = np.where(empty, self._p, forward.source)
            scale = np.where(empty[:, None], const, scale)
            mixed = np.flatnonzero(~empty & (const[:, 0] != 0.0))
            unit = bool(np.all(scale == 1.0))
            gather = Gather(source, None if unit else scale, (scale.shape[0], self._p + 1))
            if not mixed.size:
                return gather, True, None, None
            return gather, True, mixed, const[mixed]
        if isinstance(forward, Product):  # θ is checked finite here: pairs may gather
            forward = PairGather.of(forward.matrix) or forward
        if not np.any(const):
            return forward, False, None, None
        return forward, False, slice(None), const

    @functools.cached_property
    def _slices(self) -> tuple[slice | FloatArray, ...]:
        """:attr:`parts` with each (start, stop) as a slice, made once."""
        return tuple(slice(*p) if isinstance(p, tuple) else p for p in self.parts)

    def linear(self, dtheta: FloatArray) -> tuple[FloatArray, ...]:
        """The linear parts: dθ (p, B) → each map's d data (rows, B), by one product or
        gather (zero for a constant map)."""
        d = self.forward(dtheta) if self.forward is not None else None
        return tuple(d[p[0]:p[1]] if isinstance(p, tuple)
                     else np.zeros((p.shape[0], dtheta.shape[1])) for p in self.parts)

    def transpose(self, cotangents: Sequence[FloatArray | None]) -> FloatArray:
        """Cotangents on each map's data (rows, B) → on θ (p, B), by one product or gather
        (a constant map's cotangent contributes nothing)."""
        if self.backward is None:
            width = next(c.shape[1] for c in cotangents if c is not None)
            return np.zeros((self._p, width))
        g = [c for c, p in zip(cotangents, self.parts) if isinstance(p, tuple)]
        return self.backward(g[0] if len(g) == 1 else _stacked(g))


def _stacked(parts: list[FloatArray]) -> FloatArray:
    """The parts' rows stacked: the array they are consecutive rows of where they are
    (the KKT adjoint writes them so), else a concatenation (an OptNet QP's data cotangent
    at batch 128: 51 MB of fresh memory; a small one is concatenated in cache, cheaper
    than the checks)."""
    base = parts[0].base
    if (base is not None and base.nbytes > CACHE_BYTES and base.ndim == 2
            and base.flags.c_contiguous
            and sum(p.shape[0] for p in parts) == base.shape[0]
            and all(p.shape[1:] == base.shape[1:] for p in parts)):
        at = base.__array_interface__["data"][0]
        for p in parts:
            if p.__array_interface__["data"][0] != at or not p.flags.c_contiguous:
                break
            at += p.nbytes
        else:
            return base
    return np.concatenate(parts)
