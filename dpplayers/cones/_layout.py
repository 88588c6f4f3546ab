"""Layout of a product-cone vector: cone sizes (`ConeDims`), cone order, PSD `svec` storage.

The conventions themselves are stated once, in the docstring of `dpplayers.cones`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

Array: TypeAlias = npt.NDArray[np.float64]
Index: TypeAlias = npt.NDArray[np.intp]
Mask: TypeAlias = npt.NDArray[np.bool_]

CONE_ORDER: tuple[str, ...] = ("zero", "nonneg", "soc", "psd", "exp", "exp_dual", "power")
PSD_TRIANGLE_KIND = "lower"  # SCS: lower triangle, column-major, off-diagonals times sqrt(2)
EXP_CONE_ORDER: tuple[int, int, int] = (0, 1, 2)  # (x, y, z) with y exp(x/y) <= z, as cvxpy
SQRT2 = float(np.sqrt(2.0))


def _is_count(n: object) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and bool(n >= 0)


@dataclass(frozen=True)
class ConeDims:
    """Sizes of the cones of a product cone, field by field in `CONE_ORDER` (SCS's cone dict).

    ``soc`` holds the size of each second-order cone, ``psd`` the matrix order n of each PSD
    cone (its block has n(n+1)/2 entries), ``power`` the exponent of each power cone.
    """

    zero: int = 0
    nonneg: int = 0
    soc: tuple[int, ...] = ()
    psd: tuple[int, ...] = ()
    exp: int = 0
    exp_dual: int = 0
    power: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name, n in (("zero", self.zero), ("nonneg", self.nonneg), ("exp", self.exp),
                        ("exp_dual", self.exp_dual)):
            if not _is_count(n):
                raise ValueError(f"ConeDims.{name} must be a non-negative int, got {n!r}.")
        for name, sizes in (("soc", self.soc), ("psd", self.psd)):
            if not isinstance(sizes, tuple) or not all(_is_count(s) and s >= 1 for s in sizes):
                raise ValueError(f"ConeDims.{name} must be a tuple of ints >= 1, got {sizes!r}.")
        if not isinstance(self.power, tuple) or not all(
            isinstance(a, (float, np.floating)) and 0.0 < a < 1.0 for a in self.power
        ):
            raise ValueError(f"ConeDims.power must be a tuple of floats in (0, 1), "
                             f"got {self.power!r}.")

    @functools.cached_property
    def size(self) -> int:
        """Length of a vector of the product cone (kept: asked on every call)."""
        return int(self.zero + self.nonneg + sum(self.soc) + sum(n * (n + 1) // 2 for n in self.psd)
                   + 3 * (self.exp + self.exp_dual + len(self.power)))


def lower_triangle(n: int) -> tuple[Index, Index]:
    """Rows and columns of the lower triangle of an n x n matrix, column by column (read-only
    arrays, computed once per n: every PSD projection and derivative asks for them)."""
    return _lower_triangle(int(n))


@functools.cache
def _lower_triangle(n: int) -> tuple[Index, Index]:
    cols, rows = np.triu_indices(n)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


@functools.cache
def _svec_scale(n: int) -> Array:
    """1 on the diagonal, √2 off it, in ``lower_triangle`` order."""
    rows, cols = lower_triangle(n)
    scale = np.where(rows == cols, 1.0, SQRT2)
    scale.flags.writeable = False
    return scale


@functools.cache
def _psd_order(d: int) -> int:
    n = round((np.sqrt(8 * d + 1) - 1) / 2)
    if n * (n + 1) // 2 != d:
        raise ValueError(f"A PSD block has n(n+1)/2 entries; got a block of {d} entries.")
    return n


@functools.cache
def svec_places(n: int) -> Index:
    """Each svec entry's place in a row-major n x n matrix (read-only, computed once per n)."""
    rows, cols = lower_triangle(n)
    flat = rows * n + cols
    flat.flags.writeable = False
    return flat


@functools.cache
def _smat_gather(n: int) -> tuple[Index, Array]:
    """Each entry of the row-major n x n matrix: its svec position (the lower triangle's
    for an upper entry) and the factor that undoes svec's scaling."""
    rows, cols = lower_triangle(n)
    position = np.empty((n, n), np.intp)
    position[rows, cols] = position[cols, rows] = np.arange(rows.size)
    unscale = (1.0 / _svec_scale(n))[position].ravel()
    position = position.ravel()
    position.flags.writeable = unscale.flags.writeable = False
    return position, unscale


def svec(X: npt.ArrayLike) -> Array:
    """Vectorise symmetric matrices (leading axes batch) in the SCS convention of this module."""
    X = np.asarray(X, dtype=float)
    n = X.shape[-1]
    # one gather on the flattened matrices: fancy indexing on two axes costs several times more
    return X.reshape(*X.shape[:-2], n * n).take(svec_places(n), -1) * _svec_scale(n)


def smat(v: npt.ArrayLike) -> Array:
    """Inverse of `svec`: the symmetric matrices stored in ``v`` (leading axes batch)."""
    v = np.asarray(v, dtype=float)
    n = _psd_order(v.shape[-1])
    position, unscale = _smat_gather(n)
    return (v.take(position, -1) * unscale).reshape(*v.shape[:-1], n, n)


def psd_svec_permutation(n: int) -> Index:
    """Indices ``perm`` with ``v_clarabel = v_scs[perm]`` for one PSD block of order n.

    Clarabel stores the upper triangle column by column (same sqrt(2) scaling); its entry (i, j),
    i <= j, is the mirror of SCS's lower entry (j, i). The inverse is ``np.argsort(perm)``.
    """
    rows, cols = lower_triangle(n)
    position = np.empty((n, n), dtype=np.intp)
    position[rows, cols] = np.arange(rows.size)
    upper_cols, upper_rows = np.tril_indices(n)  # Clarabel's (upper_rows, upper_cols) in order
    return position[upper_cols, upper_rows]


def scs_to_clarabel_permutation(dims: ConeDims) -> Index:
    """Permutation ``perm`` of a whole product-cone vector: ``v_clarabel = v_scs[perm]``."""
    perm = np.arange(dims.size)
    offset = dims.zero + dims.nonneg + sum(dims.soc)
    for n in dims.psd:
        d = n * (n + 1) // 2
        perm[offset:offset + d] = offset + psd_svec_permutation(n)
        offset += d
    return perm

