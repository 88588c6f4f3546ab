"""Cones whose projections have closed forms: zero, free, nonnegative, second-order, PSD."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import AbstractCone
from ._layout import Array, smat, svec
from ._operators import DiagonalBlocks, PSDBlocks, SOCBlocks


@dataclass(frozen=True)
class ZeroCone(AbstractCone):
    """The cone {0} (equality constraints)."""

    def project(self, x: Array) -> Array:
        return np.zeros_like(x)

    def dproject(self, x: Array, near: Array | None = None) -> DiagonalBlocks:
        return DiagonalBlocks(np.zeros(x.shape))

    def dual(self) -> FreeCone:
        return FreeCone()


@dataclass(frozen=True)
class FreeCone(AbstractCone):
    """The whole space, dual of the zero cone."""

    def project(self, x: Array) -> Array:
        return x.copy()

    def dproject(self, x: Array, near: Array | None = None) -> DiagonalBlocks:
        return DiagonalBlocks(np.ones(x.shape))  # np.ones_like costs ~1 µs more

    def dual(self) -> ZeroCone:
        return ZeroCone()


@dataclass(frozen=True)
class NonnegativeCone(AbstractCone):
    """The nonnegative orthant; self-dual. At 0 the derivative is 1 (the side of K)."""

    def project(self, x: Array) -> Array:
        return np.maximum(x, 0.0)

    def dproject(self, x: Array, near: Array | None = None) -> DiagonalBlocks:
        return DiagonalBlocks((x >= 0).astype(float))

    def dual(self) -> NonnegativeCone:
        return self


def _soc_parts(x: Array) -> tuple[Array, Array, Array, Array, Array]:
    """t, the rest, its norm r, and masks of the inside (r <= t) and the middle (|t| < r)."""
    t, rest = x[:, 0], x[:, 1:]
    r = np.sqrt(np.vecdot(rest, rest))  # einsum costs twice as much here
    inside = r <= t
    return t, rest, r, inside, ~inside & (r > -t)


@dataclass(frozen=True)
class SecondOrderCone(AbstractCone):
    """{(t, x): ||x|| <= t}; self-dual."""

    def project(self, x: Array) -> Array:
        t, rest, r, inside, middle = _soc_parts(x)
        scale = np.where(middle, (t + r) / (2 * np.where(middle, r, 1.0)), 0.0)
        out = np.concatenate([(scale * r)[:, None], scale[:, None] * rest], axis=1)
        return np.where(inside[:, None], x, out)

    def dproject(self, x: Array, near: Array | None = None) -> SOCBlocks:
        t, rest, r, inside, middle = _soc_parts(x)
        rs = np.where(middle, r, 1.0)
        half = np.where(middle, 0.5, 0.0)
        p = inside + half
        ht = half * t / rs
        return SOCBlocks(p=p, q=half, c=p + ht, e=-ht, xbar=rest / rs[:, None])

    def dual(self) -> SecondOrderCone:
        return self


@dataclass(frozen=True)
class PSDCone(AbstractCone):
    """Symmetric positive semidefinite matrices in `svec` form; self-dual."""

    def project(self, x: Array) -> Array:
        lam, V = np.linalg.eigh(smat(x))
        return svec((V * np.maximum(lam, 0.0)[:, None, :]) @ np.swapaxes(V, 1, 2))

    def dproject(self, x: Array, near: Array | None = None) -> PSDBlocks:
        # Divided differences of max(., 0) over eigenvalue pairs, written without cancellation:
        # 1 if both >= 0, 0 if both < 0, else lam_+ / (|lam_i| + |lam_j|).
        lam, V = np.linalg.eigh(smat(x))
        pos = lam >= 0
        li, lj = lam[:, :, None], lam[:, None, :]
        both, neither = pos[:, :, None] & pos[:, None, :], ~pos[:, :, None] & ~pos[:, None, :]
        denom = np.where(both | neither, 1.0, np.abs(li) + np.abs(lj))
        mixed = (np.maximum(li, 0) + np.maximum(lj, 0)) / denom
        return PSDBlocks(V=V, B=np.where(both, 1.0, np.where(neither, 0.0, mixed)))

    def dual(self) -> PSDCone:
        return self

