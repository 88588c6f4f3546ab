"""``Direct`` on the lifted J̃ of a program with large second-order cone blocks
(:mod:`dpplayers._derivative.lifting`): the factorisation sees O(d) entries per block."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from .kkt import KKTOperator
from .linear_solvers import AbstractLinearSolver, Direct, SolveStats

FloatArray = npt.NDArray[np.float64]


def lifted_operator(op: KKTOperator) -> KKTOperator:
    """J̃ for J (``op.pattern.lifted`` set): A with one empty row per extra unknown, so that
    J̃'s order is n + A's rows and the elimination's per-row reads (D's 1×1 blocks, rows
    of A with one entry) see the extra rows as neither."""
    pattern = op.pattern.lifted
    A = op.A
    padded = sp.csc_matrix((A.data, A.indices, A.indptr), shape=(op.m + pattern.extra, op.n))
    return dataclasses.replace(op, A=padded, pattern=pattern)


@dataclass
class _LiftedState:
    """Direct's state on J̃ (None: J̃'s solve was degenerate), and on J once needed."""

    operator: KKTOperator
    lifted: Any
    plain: Any = None


@dataclass(frozen=True)
class LiftedDirect(AbstractLinearSolver):
    """``Direct`` on J̃ where J has lifted blocks: the right-hand sides padded with zeros
    for the extra unknowns, which are dropped from the answer. An element whose J̃ solve
    is degenerate (J singular) or not finite is solved by ``Direct`` on J itself, so that
    its minimum-norm answer is J's."""

    name: ClassVar[str] = "direct"
    inner: Direct

    def init(self, operator: KKTOperator) -> _LiftedState:
        if operator.pattern.lifted is None or operator.transposed:
            return _LiftedState(operator, None, self.inner.init(operator))
        return _LiftedState(operator, self.inner.init(lifted_operator(operator)))

    def compute(self, state: _LiftedState, rhs: FloatArray,
                transpose: bool) -> tuple[FloatArray, SolveStats]:
        if state.lifted is not None:
            N = rhs.shape[0]
            padded = np.zeros((N + state.operator.pattern.lifted.extra, rhs.shape[1]))
            padded[:N] = rhs
            z, stats = self.inner.compute(state.lifted, padded, transpose)
            if not stats.degenerate and np.all(np.isfinite(z)):
                return z[:N], stats
            state.lifted = None
        if state.plain is None:
            state.plain = self.inner.init(state.operator)
        return self.inner.compute(state.plain, rhs, transpose)

    def null_space(self, state: _LiftedState) -> FloatArray | None:
        return self.inner.null_space(state.plain) if state.plain is not None else None
