"""The interface every cone kind implements, and Moreau's identity for duals."""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from ._layout import Array
from ._operators import AbstractBlockOperator, DenseBlocks


class AbstractCone(abc.ABC):
    """A cone kind. Methods take a stack x of shape (k, d): k cones of this kind and size d."""

    #: Whether ``dproject`` uses ``near`` (a search for the projection starts from it).
    uses_near: ClassVar[bool] = False

    @abc.abstractmethod
    def project(self, x: Array) -> Array:
        """Euclidean projection of each row onto the cone, shape (k, d)."""

    @abc.abstractmethod
    def dproject(self, x: Array, near: Array | None = None) -> AbstractBlockOperator:
        """Derivative of `project` at x, one d x d block per row.

        ``near`` (optional, same shape) is a point close to each row's projection, such as a
        solver's answer; cones that search for their projection start from it."""

    @abc.abstractmethod
    def dual(self) -> AbstractCone:
        """The dual cone K* = {y : <y, x> >= 0 for all x in K}."""

    def repeat(self, copies: int) -> AbstractCone:
        """This cone kind for ``copies`` stacks of its k blocks one after another (only cones
        with a parameter per block, the power cones, need to tile it)."""
        return self


def moreau_dproject(primal: AbstractCone, x: Array, near: Array | None = None) -> DenseBlocks:
    """Derivative of Pi_K*(x) = x + Pi_K(-x): I - DPi_K(-x). ``near`` is close to Pi_K*(x),
    so near - x is close to Pi_K(-x)."""
    hint = None if near is None else near - x
    return DenseBlocks(np.eye(x.shape[1]) - primal.dproject(-x, hint).as_matrices())

