"""A product of cones: groups its blocks by kind and size, and projects each group at once."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from ._base import AbstractCone
from ._closed_form import NonnegativeCone, PSDCone, SecondOrderCone, ZeroCone
from ._exponential import DualExponentialCone, ExponentialCone
from ._layout import Array, ConeDims, Index
from ._operators import BatchedProjectionDerivative, BlockEntries, ProjectionDerivative
from ._power import PowerCone

Groups: TypeAlias = tuple[tuple[AbstractCone, Index], ...]


def _group(cone: AbstractCone, offset: int, sizes: npt.ArrayLike) -> list[tuple[AbstractCone,
                                                                                   Index]]:
    """Positions of consecutive cones of one kind starting at offset, one group per size."""
    sizes = np.asarray(sizes, dtype=np.intp)
    starts = offset + np.cumsum(sizes) - sizes
    return [(cone, starts[sizes == d][:, None] + np.arange(d)) for d in np.unique(sizes)]


@dataclass(frozen=True, eq=False)
class ProductCone:
    """A product of cones laid out as `ConeDims` says (or its dual when ``is_dual``).

    Build it with `from_dims`; ``groups`` pairs a cone with the (k, d) positions of its k blocks.
    """

    dims: ConeDims
    is_dual: bool
    groups: Groups

    @classmethod
    def from_dims(cls, dims: ConeDims, dual: bool = False) -> ProductCone:
        """The product cone of ``dims`` in `CONE_ORDER`, or its dual cone."""
        layout: tuple[tuple[AbstractCone, list[int]], ...] = (
            (ZeroCone(), [1] * dims.zero), (NonnegativeCone(), [1] * dims.nonneg),
            (SecondOrderCone(), list(dims.soc)), (PSDCone(), [n * (n + 1) // 2 for n in dims.psd]),
            (ExponentialCone(), [3] * dims.exp), (DualExponentialCone(), [3] * dims.exp_dual),
            (PowerCone(np.asarray(dims.power, dtype=float)), [3] * len(dims.power)),
        )
        groups, offset = [], 0
        for cone, sizes in layout:
            groups += _group(cone.dual() if dual else cone, offset, sizes)
            offset += sum(sizes)
        return cls(dims, dual, tuple(groups))

    @functools.cached_property
    def size(self) -> int:
        """Length of a vector of the cone."""
        return self.dims.size

    def _check(self, v: npt.ArrayLike) -> Array:
        v = np.asarray(v, dtype=float)
        if v.shape != (self.size,):
            raise ValueError(f"Expected a vector of shape ({self.size},), got shape {v.shape}.")
        return v

    def project(self, v: npt.ArrayLike) -> Array:
        """Euclidean projection of v onto the cone."""
        v = self._check(v)
        out = np.empty_like(v)
        for cone, idx in self.groups:
            out[idx] = cone.project(v[idx])
        return out

    def project_batch(self, V: Array) -> Array:
        """`project` of every column of V (size, b): each group's cones of all columns in one
        vectorised call."""
        if V.ndim != 2 or V.shape[0] != self.size:
            raise ValueError(f"Expected an array of shape ({self.size}, b), got {V.shape}.")
        out = np.empty_like(V)
        for cone, idx in self.groups:
            k, d = idx.shape
            flat = V[idx].transpose(0, 2, 1).reshape(-1, d)
            out[idx] = cone.project(flat).reshape(k, -1, d).transpose(0, 2, 1)
        return out

    def dual(self) -> ProductCone:
        """The dual cone: zero <-> free, exp <-> dual exp, power <-> dual power, others self."""
        return ProductCone(self.dims, not self.is_dual,
                           tuple((cone.dual(), idx) for cone, idx in self.groups))

    def dproject(self, v: npt.ArrayLike, near: npt.ArrayLike | None = None) -> ProjectionDerivative:
        """Derivative of `project` at v, as a block-diagonal operator. ``near``, a point close
        to the projection (a solver's answer), seeds the cones that search for it."""
        v = self._check(v)
        hint = None if near is None else self._check(near)
        blocks = tuple((cone.dproject(v[idx], None if hint is None else hint[idx]), idx)
                       for cone, idx in self.groups)
        return ProjectionDerivative(self.size, blocks)

    def dproject_batch(self, V: Array, near: Array | None = None) -> BatchedProjectionDerivative:
        """`dproject` at every column of V (size, b) as one batched operator: every group's
        cones of all columns in one vectorised call (the exponential and power cones' root
        searches cost mostly per call, not per cone)."""
        if V.ndim != 2 or V.shape[0] != self.size:
            raise ValueError(f"Expected an array of shape ({self.size}, b), got {V.shape}.")
        b = V.shape[1]
        blocks = []
        # (k·d, b) → (b, k, d), point-major; for b = 1 a reshape is enough
        stack = ((lambda X, k, d: X.reshape(k, d)) if b == 1 else
                 (lambda X, k, d: X.reshape(k, d, b).transpose(2, 0, 1).reshape(b * k, d)))
        for (cone, idx), at in zip(self.groups, self._spans):
            k, d = idx.shape
            hint = None if near is None or not cone.uses_near else stack(near[at], k, d)
            blocks.append((cone.repeat(b).dproject(stack(V[at], k, d), hint), idx))
        return BatchedProjectionDerivative(self.size, b, tuple(blocks), self.block_entries)

    @functools.cached_property
    def _spans(self) -> tuple[slice | Index, ...]:
        """Each group's positions as a slice where they are one run (every group but one
        of several equal-sized cones apart), else flattened: basic slicing is a view."""
        spans = []
        for _, idx in self.groups:
            flat = idx.ravel()
            run = flat.size and flat[-1] - flat[0] + 1 == flat.size and np.all(np.diff(flat) == 1)
            spans.append(slice(int(flat[0]), int(flat[-1]) + 1) if run else flat)
        return tuple(spans)

    @functools.cached_property
    def block_entries(self) -> BlockEntries:
        """Where the entries of DPi's blocks are, in ``block_values`` order."""
        return BlockEntries.of(self.size, tuple(idx for _, idx in self.groups))

    def contains(self, v: npt.ArrayLike, tol: float = 1e-8) -> bool:
        """Whether v is in the cone: ||Pi(v) - v|| <= tol max(1, ||v||)."""
        v = self._check(v)
        return bool(np.linalg.norm(self.project(v) - v) <= tol * max(1.0, float(np.linalg.norm(v))))
