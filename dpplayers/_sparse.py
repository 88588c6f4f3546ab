"""A fixed CSC sparsity pattern whose data changes per call (A, P and J of a program), the
index arithmetic that pairs entries of such patterns, and the columns of batch data arrays
(rows, B or 1: a map that ignores θ has one column, shared by the batch)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CSCPattern:
    """A fixed sparsity pattern (CSC indices/indptr, sorted within each column); data
    arrays follow its order."""

    shape: tuple[int, int]
    indices: npt.NDArray[np.int32]
    indptr: npt.NDArray[np.int32]

    def matrix(self, data: FloatArray) -> sp.csc_matrix:
        """Wrap one data vector as a CSC matrix without copying or sorting.

        A shallow copy of a checked template with its data swapped: scipy's constructor
        re-validates the (fixed) pattern on every call, which cost more than the rest of a
        small problem's per-call overhead together."""
        template = self._template
        out = template.__class__.__new__(template.__class__)
        out.__dict__.update(template.__dict__)  # what copy.copy does, without its protocol
        out.data = data
        return out

    @functools.cached_property
    def _template(self) -> sp.csc_matrix:
        out = sp.csc_matrix((np.zeros(self.indices.size), self.indices, self.indptr),
                            shape=self.shape)
        out.has_sorted_indices = True  # so solvers and scipy skip the check
        return out

    @property
    def rows(self) -> npt.NDArray[np.int32]:
        return self.indices

    @property
    def cols(self) -> npt.NDArray[np.int64]:
        return np.repeat(np.arange(self.shape[1]), np.diff(self.indptr))


def concatenated_ranges(starts: npt.ArrayLike, counts: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """arange(s, s + c) for each (s, c), one after another, without a Python loop: every
    entry paired with every entry of another pattern's row or column."""
    starts, counts = np.asarray(starts, np.intp), np.asarray(counts, np.intp)
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(counts.sum())


def sorted_runs(keys: npt.NDArray[np.integer]) -> tuple[npt.NDArray[np.intp],
                                                      npt.NDArray[np.intp]]:
    """A stable order that sorts ``keys``, and where each run of equal keys starts in it:
    entries landing on one place of a pattern, side by side for one ``reduceat``."""
    order = np.argsort(keys, kind="stable")
    return order, np.flatnonzero(np.diff(keys[order], prepend=-1) != 0)


def set_columns(target: FloatArray, at: npt.NDArray[np.intp], values: FloatArray) -> None:
    """target[:, at] = values for target (b, L) and values (b, len(at)): flat where b is 1
    and target is one run in memory (a 1-D fancy assignment costs about 60% of the 2-D one,
    3 against 5 µs for 4,400 entries)."""
    if target.shape[0] == 1 and target.flags.c_contiguous:  # else reshape would copy
        target.reshape(-1)[at] = values.reshape(-1)
    else:
        target[:, at] = values


def gather(a: FloatArray, at: npt.NDArray[np.intp], axis: int) -> FloatArray:
    """``a.take(at, axis)``, but never copying ``a`` whole: ``np.take`` first makes a
    non-contiguous input contiguous (a view of the batched solve's blocks at batch 16:
    0.78 ms against 0.12 ms of fancy indexing; lsq_norm's transposed (nnz, b) values, 5
    elements: 200 µs against 2 µs for 300 entries). A transposed 2-D array is taken along
    its contiguous side, any other view by fancy indexing."""
    if a.flags.c_contiguous:
        return a.take(at, axis)
    if a.ndim == 2 and a.T.flags.c_contiguous:
        return a.T.take(at, 1 - axis).T
    index: list = [slice(None)] * a.ndim
    index[axis] = at
    return a[tuple(index)]


#: Copies of arrays up to this many bytes are made whole (they stay in a core's cache).
CACHE_BYTES = 1 << 19


def copy_tiled(out: FloatArray, a: FloatArray, axes: tuple[int, ...], tile: int = 16) -> None:
    """``out[...] = a``, tile by tile over ``axes`` (two, or one in runs of tile²) where
    ``a`` is large. A batch of parameter values moved between the user's layout (batch,
    *shape) and θ's (entries, batch) is a transposition: copied whole, one of the two
    arrays is read or written a page apart per entry, while a tile of B · 256 entries stays
    in cache. Measured (2026-12-07, one thread, medians): Q (128, 200, 200) from θ 44.7 ms
    whole against 13.6 ms in 16 × 16 tiles (batch 32: 9.1 against 2.0); an OptNet QP's Q, G
    and A into θ, 45 against 28 ms at batch 128 (6.4 against 2.8 at 32)."""
    if a.nbytes <= CACHE_BYTES:
        out[...] = a
        return
    front = tuple(range(len(axes)))  # the tiled axes first, as views: plain slices below
    out, a = np.moveaxis(out, axes, front), np.moveaxis(a, axes, front)
    if len(axes) == 1:
        for i in range(0, a.shape[0], tile * tile):
            out[i : i + tile * tile] = a[i : i + tile * tile]
        return
    for i in range(0, a.shape[0], tile):
        for j in range(0, a.shape[1], tile):
            out[i : i + tile, j : j + tile] = a[i : i + tile, j : j + tile]


def c_ordered(a: FloatArray) -> FloatArray:
    """``a`` as a C-ordered array; a strided view with a leading batch axis (a batch of
    gradients pulled back from θ) is copied by :func:`copy_tiled`."""
    if a.flags.c_contiguous:
        return a
    if a.ndim < 2:
        return a.copy()
    out = np.empty(a.shape, a.dtype)
    copy_tiled(out, a, (-2, -1) if a.ndim > 2 else (-1,))
    return out


def data_column(arr: FloatArray, k: int) -> FloatArray:
    """Element k's column of a data array (a map that ignores θ has one, shared)."""
    return arr[:, k if arr.shape[1] > 1 else 0]


def data_columns(arr: FloatArray, keys: list[int]) -> FloatArray:
    """The given elements' columns of a data array (the shared one repeated; a single
    element's without a copy)."""
    if arr.shape[1] == 1 and len(keys) == 1:
        return arr
    return arr[:, keys] if arr.shape[1] > 1 else np.repeat(arr, len(keys), 1)
