"""Affine maps θ̃ = [θ; 1] ↦ cone-program data (C_P, C_A, C_b, C_c), one sparse matrix each."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

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
class StackedMaps:
    """Several affine maps evaluated together: those that depend on θ as one sparse product
    (one dispatch instead of one per map), the constant ones precomputed as one column.
    Where each datum copies at most one parameter entry (and each entry enters at most one
    datum), the product (and the transpose's) is a gather."""

    varying: sp.csr_array | None  # the θ-dependent maps' rows, stacked
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
        return cls(sp.csr_array(sp.vstack(rows, format="csr")) if rows else None, tuple(parts), p)

    def __call__(self, theta: FloatArray) -> tuple[FloatArray, ...]:
        """θ̃ = [θ; 1] (p+1, B) → each map's data (rows, B), or its constant column."""
        values = None
        if self.varying is not None:
            if self._single_sources is not None:  # a gather: cheaper than a sparse product
                cols, coefficients, constant = self._single_sources
                values = theta.take(cols, 0) * coefficients + constant
            else:
                values = self.varying @ theta
        return tuple(values[p[0]:p[1]] if isinstance(p, tuple) else p for p in self.parts)

    @functools.cached_property
    def _single_sources(self) -> tuple[npt.NDArray[np.intp], FloatArray, FloatArray] | None:
        """Where each datum copies at most one parameter entry, scaled, plus a constant
        (cvxpy's usual maps): that entry, the scale (rows, 1) and the constant (rows, 1).
        None otherwise."""
        single = _one_per_row(self._linear) if self._linear is not None else None
        if single is None:
            return None
        return (*single, self.varying[:, [-1]].toarray())

    def linear(self, dtheta: FloatArray) -> tuple[FloatArray, ...]:
        """The linear parts: dθ (p, B) → each map's d data (rows, B), by one product or
        gather (zero for a constant map)."""
        d = None
        if self._single_sources is not None:
            cols, coefficients, _ = self._single_sources
            d = dtheta.take(cols, 0) * coefficients
        elif self._linear is not None:
            d = np.asarray(self._linear @ dtheta)
        return tuple(d[p[0]:p[1]] if isinstance(p, tuple)
                     else np.zeros((p.shape[0], dtheta.shape[1])) for p in self.parts)

    @functools.cached_property
    def _linear(self) -> sp.csr_array | None:
        return sp.csr_array(self.varying[:, :-1]) if self.varying is not None else None

    def transpose(self, cotangents: Sequence[FloatArray | None]) -> FloatArray:
        """Cotangents on each map's data (rows, B) → on θ (p, B), by one product or gather
        (a constant map's cotangent contributes nothing)."""
        g = [c for c, p in zip(cotangents, self.parts) if isinstance(p, tuple)]
        if self._linear_t is None:
            width = next(c.shape[1] for c in cotangents if c is not None)
            return np.zeros((self._p, width))
        stacked = np.concatenate(g) if len(g) > 1 else g[0]
        if self._single_entries is not None:
            rows, coefficients = self._single_entries
            return stacked.take(rows, 0) * coefficients
        return np.asarray(self._linear_t @ stacked)

    @functools.cached_property
    def _linear_t(self) -> sp.csr_array | None:
        return sp.csr_array(self._linear.T) if self._linear is not None else None

    @functools.cached_property
    def _single_entries(self) -> tuple[npt.NDArray[np.intp], FloatArray] | None:
        """Where every parameter entry enters at most one datum (cvxpy's usual maps: each
        entry of F, q, ... is copied into one datum, scaled), its datum's row and the
        coefficient (p, 1): the transpose is then a gather, several times cheaper than
        a sparse product. None otherwise."""
        return _one_per_row(self._linear_t) if self._linear_t is not None else None


def _one_per_row(matrix: sp.csr_array) -> tuple[npt.NDArray[np.intp], FloatArray] | None:
    """(column, coefficient (rows, 1)) of each row's one entry (column 0 and coefficient 0
    where it has none), or None if a row has more than one."""
    counts = np.diff(matrix.indptr)
    if np.any(counts > 1):
        return None
    cols = np.zeros(matrix.shape[0], np.intp)
    coefficients = np.zeros((matrix.shape[0], 1))
    rows = np.flatnonzero(counts)
    cols[rows], coefficients[rows, 0] = matrix.indices, matrix.data
    return cols, coefficients
