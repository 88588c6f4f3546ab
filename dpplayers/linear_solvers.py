"""Solve modes for J z = r and Jᵀ z = r: strategies on one operator.

Each mode has ``init(operator) -> state`` (a factorisation for Direct/Dense, nothing for
the iterative ones) and ``compute(state, rhs, transpose) -> (z, SolveStats)``; the
transposed solve reuses the same state. Every solve reports its relative residual, the
iterations used and whether it converged.

Decision table (what happens when a solve is not clean):

    mode    | J singular or solve inaccurate          | iterative solve stalls
    --------+-----------------------------------------+--------------------------------
    direct  | LSMR minimum-norm least squares,        | (n/a)
            | flagged degenerate                      |
    dense   | lstsq minimum-norm, flagged degenerate  | (n/a)
    lsqr    | least squares (istop 2), degenerate     | fall back to direct, flagged
    lsmr    | same                                    | same
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .derivative import KKTOperator

FloatArray = npt.NDArray[np.float64]

#: Relative residual above which a factorised solve is treated as degenerate.
DEGENERACY_TOL = 1e-7


@dataclass(frozen=True)
class SolveStats:
    """What one (multi right-hand-side) solve achieved."""

    residual: float  # max over columns of ‖J z − r‖ / max(‖r‖, tiny)
    iterations: int
    converged: bool
    fell_back: bool = False  # an iterative solve stalled and Direct answered
    degenerate: bool = False  # J singular: least-squares / minimum-norm answer


class AbstractLinearSolver(abc.ABC):
    """A way to solve J z = r given J as a :class:`KKTOperator`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def init(self, operator: KKTOperator) -> Any:
        """Prepare (factorise) once per solution."""

    @abc.abstractmethod
    def compute(self, state: Any, rhs: FloatArray, transpose: bool) -> tuple[FloatArray, SolveStats]:
        """Solve for every column of rhs (N, r)."""


def _residual(op: KKTOperator, z: FloatArray, rhs: FloatArray) -> float:
    return _relative(op.mv(z) - rhs, rhs)


def _relative(res: FloatArray, rhs: FloatArray) -> float:
    """max over columns of ‖res‖ / ‖rhs‖."""
    den = np.maximum(np.linalg.norm(rhs, axis=0), 1e-300)
    return float(np.max(np.linalg.norm(res, axis=0) / den, initial=0.0))


def _min_norm(op: KKTOperator, rhs: FloatArray) -> tuple[FloatArray, int]:
    """Minimum-norm least-squares solution by LSMR, column by column."""
    lin = spla.LinearOperator((op.in_size, op.in_size), matvec=op.mv, rmatvec=op.T.mv)
    cols, iters = [], 0
    for k in range(rhs.shape[1]):
        out = spla.lsmr(lin, rhs[:, k], atol=1e-12, btol=1e-12, maxiter=20 * op.in_size)
        cols.append(out[0])
        iters += int(out[2])
    return np.stack(cols, axis=1), iters


@dataclass(frozen=True)
class Direct(AbstractLinearSolver):
    """Sparse LU of J (SuperLU), computed once and reused for J and Jᵀ solves.

    J is exactly singular whenever the canonical program has a non-unique part (cvxpy's
    auxiliary variables with slack on both sides, e.g. t in ‖x‖ ≤ t ≤ 2 when the norm
    bound is inactive). Then J + δI is factorised instead and iterative refinement
    converges to a solution of the consistent system J z = r (flagged degenerate); if it
    does not, LSMR gives the minimum-norm least-squares answer.
    """

    name: ClassVar[str] = "direct"
    refinement_steps: int = 30
    #: Coupled blocks up to this order use LAPACK's dense LU (measured: 0.03 ms against
    #: SuperLU's 0.25 ms at order 85; SuperLU wins from about 300 on).
    dense_limit: int = 200

    def init(self, operator: KKTOperator) -> _DirectState:
        J = operator.as_matrix()
        E = operator.decoupled_rows()
        mask = np.ones(J.shape[0], bool)
        mask[E] = False
        keep = np.flatnonzero(mask)
        dense = keep.size <= self.dense_limit and J.shape[0] <= 4 * self.dense_limit
        if dense:  # numpy slicing of a small dense J beats sparse fancy indexing
            full = J.toarray()
            J_KK = full[np.ix_(keep, keep)]
            J_EK = full[np.ix_(E, keep)] if E.size else None
        else:
            J_KK = sp.csc_matrix(J[keep][:, keep]) if E.size else J.copy()
            J_KK.eliminate_zeros()  # D − I = 0 on active rows: stored zeros steer the ordering
            J_EK = sp.csr_matrix(J[E][:, keep]) if E.size else None
        try:
            lu, singular = _LU(J_KK, dense), False
        except RuntimeError:  # exactly singular
            delta = 1e-9 * max(1.0, float(abs(J_KK).max()))
            eye = np.eye(J_KK.shape[0]) if dense else sp.identity(J_KK.shape[0], format="csc")
            shifted = J_KK + delta * eye if dense else sp.csc_matrix(J_KK + delta * eye)
            try:
                lu, singular = _LU(shifted, dense), True
            except RuntimeError:
                lu, singular = None, True
        return _DirectState(operator, J, J_KK, J_EK, keep, E, lu, singular)

    def compute(self, state, rhs, transpose):
        op = state.operator.T if transpose else state.operator
        if state.lu is not None:
            r_K, r_E = rhs[state.keep], rhs[state.E]
            if transpose:  # z_E = −r_E, then J_KKᵀ z_K = r_K + J_EKᵀ r_E
                z_E = -r_E
                if state.J_EK is not None:
                    r_K = r_K + state.J_EK.T @ r_E
            z_K, steps = self._refined_solve(state, r_K, transpose)
            z = np.empty_like(rhs, dtype=float)
            z[state.keep] = z_K
            if not transpose:  # z_E = J_EK z_K − r_E
                z_E = (state.J_EK @ z_K - r_E) if state.J_EK is not None else -r_E
            z[state.E] = z_E
            J = state.J.T if transpose else state.J
            res = _relative(J @ z - rhs, rhs)
            if np.all(np.isfinite(z)) and res <= DEGENERACY_TOL:
                return z, SolveStats(res, steps, True, degenerate=state.singular)
        z, iters = _min_norm(op, rhs)
        return z, SolveStats(_residual(op, z, rhs), iters, True, degenerate=True)

    def _refined_solve(self, state: _DirectState, rhs: FloatArray,
                       transpose: bool) -> tuple[FloatArray, int]:
        """Solve with J_KK's LU plus iterative refinement (converges on the shifted LU of a
        singular but consistent system, polishes the last digits otherwise)."""
        J = state.J_KK.T if transpose else state.J_KK
        z = state.lu.solve(rhs, transpose)
        res, steps = _relative(J @ z - rhs, rhs), 0
        while steps < self.refinement_steps and res > 1e-13 and np.all(np.isfinite(z)):
            z = z + state.lu.solve(rhs - J @ z, transpose)
            new = _relative(J @ z - rhs, rhs)
            steps += 1
            if new > 0.5 * res and not state.singular:
                break
            res = new
        return z, steps


class _LU:
    """An LU factorisation with ``solve(rhs, transpose)``: LAPACK's dense one for small
    systems (scipy.sparse's per-call overhead exceeds the work), SuperLU otherwise."""

    def __init__(self, J: sp.csc_matrix | FloatArray, dense: bool) -> None:
        self.dense = dense
        if dense:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", sla.LinAlgWarning)  # singular: handled below
                self.factor = sla.lu_factor(np.asarray(J), check_finite=False)
            pivots = np.abs(np.diag(self.factor[0]))
            if not np.all(np.isfinite(pivots)) or pivots.min(initial=1.0) == 0.0:
                raise RuntimeError("Factor is exactly singular")
        else:
            self.factor = spla.splu(J, permc_spec="COLAMD")

    def solve(self, rhs: FloatArray, transpose: bool) -> FloatArray:
        if self.dense:
            return sla.lu_solve(self.factor, rhs, trans=1 if transpose else 0, check_finite=False)
        # SuperLU solves column-major blocks fastest
        return self.factor.solve(np.asfortranarray(rhs), trans="T" if transpose else "N")


@dataclass(frozen=True)
class _DirectState:
    """Direct's factorisation. Rows E (inactive inequalities: 1×1 blocks of D equal to 0)
    decouple from J: there J[E, K] = A_E, J[E, E] = −I and J[K, E] = 0, so only J_KK is
    factorised and z_E follows from z_K in one product (for J and for Jᵀ)."""

    operator: KKTOperator
    J: sp.csc_matrix
    J_KK: sp.csc_matrix | FloatArray  # dense for small systems
    J_EK: sp.csr_matrix | FloatArray | None
    keep: npt.NDArray[np.intp]
    E: npt.NDArray[np.intp]
    lu: Any
    singular: bool


@dataclass(frozen=True)
class Dense(AbstractLinearSolver):
    """Dense LU of J (LAPACK) for small problems; lstsq when J is singular."""

    name: ClassVar[str] = "dense"

    def init(self, operator):
        J = operator.as_matrix().toarray()
        with np.errstate(all="ignore"):
            lu = sla.lu_factor(J, check_finite=False)
        singular = np.abs(np.diag(lu[0])).min(initial=1.0) <= 1e-13 * max(1.0, np.abs(J).max())
        return operator, J, (None if singular else lu)

    def compute(self, state, rhs, transpose):
        op, J, lu = state
        op = op.T if transpose else op
        if lu is not None:
            z = sla.lu_solve(lu, rhs, trans=1 if transpose else 0, check_finite=False)
            res = _residual(op, z, rhs)
            if np.all(np.isfinite(z)) and res <= DEGENERACY_TOL:
                return z, SolveStats(res, 0, True)
        z = np.linalg.lstsq(J.T if transpose else J, rhs, rcond=None)[0]
        return z, SolveStats(_residual(op, z, rhs), 0, True, degenerate=True)


@dataclass(frozen=True)
class _Iterative(AbstractLinearSolver):
    """Shared driver for LSQR and LSMR: matrix-free, falls back to Direct when stalled."""

    atol: float = 1e-10
    btol: float = 1e-10
    iter_lim: int | None = None  # default: 10 × (n + m)

    def __post_init__(self) -> None:
        if not (self.atol > 0 and self.btol > 0):
            raise ValueError(f"{self.name}: atol and btol must be positive, got {self.atol}, {self.btol}.")
        if self.iter_lim is not None and self.iter_lim < 1:
            raise ValueError(f"{self.name}: iter_lim must be >= 1, got {self.iter_lim}.")

    @abc.abstractmethod
    def _run(self, lin, b, limit) -> tuple[FloatArray, int, int]:
        """Return (solution, istop, iterations)."""

    def init(self, operator):
        return operator

    def compute(self, state, rhs, transpose):
        op = state.T if transpose else state
        lin = spla.LinearOperator((op.in_size, op.in_size), matvec=op.mv, rmatvec=op.T.mv)
        limit = self.iter_lim or 10 * op.in_size
        cols, iters, stalled, lsq = [], 0, False, False
        for k in range(rhs.shape[1]):
            z, istop, it = self._run(lin, rhs[:, k], limit)
            cols.append(z)
            iters += it
            stalled |= istop in (3, 6, 7)
            lsq |= istop in (2, 5)
        z = np.stack(cols, axis=1)
        if stalled:
            direct = Direct()
            z, stats = direct.compute(direct.init(state), rhs, transpose)
            return z, SolveStats(stats.residual, iters, stats.converged, True, stats.degenerate)
        return z, SolveStats(_residual(op, z, rhs), iters, True, degenerate=lsq)


@dataclass(frozen=True)
class LSQR(_Iterative):
    """LSQR on J (the reference, matrix-free mode)."""

    name: ClassVar[str] = "lsqr"

    def _run(self, lin, b, limit):
        out = spla.lsqr(lin, b, atol=self.atol, btol=self.btol, iter_lim=limit)
        return out[0], int(out[1]), int(out[2])


@dataclass(frozen=True)
class LSMR(_Iterative):
    """LSMR on J: like LSQR, usually fewer iterations."""

    name: ClassVar[str] = "lsmr"

    def _run(self, lin, b, limit):
        out = spla.lsmr(lin, b, atol=self.atol, btol=self.btol, maxiter=limit)
        return out[0], int(out[1]), int(out[2])


def make_linear_solver(mode: str, options: dict[str, Any]) -> AbstractLinearSolver:
    """The strategy for a mode name, with LSQR/LSMR tolerances from ``options``."""
    if mode == "direct":
        return Direct()
    if mode == "dense":
        return Dense()
    kwargs = {k: options[k] for k in ("atol", "btol", "iter_lim") if k in options}
    if mode == "lsqr":
        return LSQR(**kwargs)
    if mode == "lsmr":
        return LSMR(**kwargs)
    raise ValueError(f"derivative mode must be one of 'direct', 'lsqr', 'lsmr', 'dense'; got {mode!r}.")

