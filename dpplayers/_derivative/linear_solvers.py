"""Solve modes for J z = r and Jᵀ z = r: strategies on one operator.

Each mode has ``init(operator) -> state`` (a factorisation for Direct/Dense, nothing for
the iterative ones) and ``compute(state, rhs, transpose) -> (z, SolveStats)``; the
transposed solve reuses the same state. Every solve reports its relative residual, the
iterations used and whether it converged.

Decision table (what happens when a solve is not clean):

    mode    | J singular or near-singular             | iterative solve stalls
    --------+-----------------------------------------+--------------------------------
    direct  | minimum-norm least squares (truncated   | (n/a)
            | SVD; LSMR beyond DENSE_MAX_ORDER),      |
            | flagged degenerate                      |
    dense   | the same                                | (n/a)
    lsqr    | least squares (istop 2) or cond above   | fall back to direct, flagged
            | the limit: the same, degenerate         |
    lsmr    | same                                    | same

Near-singular means an estimated condition number above J's limit (``plan.condition_limit``:
:mod:`dpplayers._derivative.conditioning` says why, how it is estimated, and the data behind it).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .bordered import BorderedFactor
from .conditioning import (
    ConditionLimit,
    TruncatedInverse,
    lu_condition,
    norm1,
    probe,
    sparse_lu_condition,
)
from .elimination import (
    Auxiliaries,
    PairElimination,
    Singletons,
    anti_diagonal,
    free_auxiliaries,
)
from .kkt import KKTOperator
from .plan import DENSE_FRACTION, DENSE_MAX_ORDER, DENSE_ORDER, MIXED_MIN_ORDER

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

    def null_space(self, state: Any) -> FloatArray | None:
        """J's null space as the minimum-norm answer dropped it (order, r), where a solve
        of this state computed one; else None."""
        return None


def _null(truncated: TruncatedInverse | None) -> FloatArray | None:
    return truncated.null if truncated is not None else None


def _residual(op: KKTOperator, z: FloatArray, rhs: FloatArray) -> float:
    return relative_residual(op.mv(z) - rhs, rhs)


def relative_residual(res: FloatArray, rhs: FloatArray) -> float:
    """max over columns of ‖res‖ / ‖rhs‖; a column that is zero but for rounding (a
    jacobian's parameter that barely enters: norm 4e-17 beside columns of norm 1) is
    measured against √eps times the largest column, since an iterative solve stops relative
    to each column and its residual there is rounding noise too (it read 0.18)."""
    norms = np.linalg.norm(rhs, axis=0)
    floor = max(np.sqrt(np.finfo(float).eps) * norms.max(initial=0.0), 1e-300)
    return float(np.max(np.linalg.norm(res, axis=0) / np.maximum(norms, floor), initial=0.0))


def _min_norm(op: KKTOperator, rhs: FloatArray) -> tuple[FloatArray, int]:
    """Minimum-norm least-squares solution by LSMR, column by column."""
    lin = spla.LinearOperator((op.in_size, op.in_size), matvec=op.mv, rmatvec=op.T.mv)
    cols, iters = [], 0
    for k in range(rhs.shape[1]):
        out = spla.lsmr(lin, rhs[:, k], atol=1e-12, btol=1e-12, maxiter=20 * op.in_size)
        cols.append(out[0])
        iters += int(out[2])
    return np.stack(cols, axis=1), iters


def _fills(lu: DenseLU | SparseLU, order: int) -> bool:
    """Whether a sparse LU filled in enough (``DENSE_FRACTION`` of order²) that a dense one
    would have been faster."""
    return not lu.dense and order <= DENSE_MAX_ORDER and lu.factor.nnz >= DENSE_FRACTION * order * order


@dataclass(frozen=True)
class Direct(AbstractLinearSolver):
    """LU of J (LAPACK's for small or full J, SuperLU's otherwise), computed once and
    reused for J and Jᵀ solves.

    The program's elimination plan (:mod:`.plan`) peels J's singleton pairs (inactive
    inequalities, bounds, fixed variables) off exactly, and a large core's 2×2 pair pivots,
    so only the core J_RR (or its Schur complement) is factorised; a core
    [[0, Bᵀ], [B, 0]] (an LP at a non-degenerate vertex) is solved with one LU of B.

    J is singular whenever the canonical program has a non-unique part (cvxpy's auxiliary
    variables with slack on both sides, e.g. t in ‖x‖ ≤ t ≤ 2 when the norm bound is
    inactive), and nearly so at an interior-point solver's answer there. Where the LU of
    the core is singular or near-singular (:class:`DenseLU`'s rule), or a solve is not
    clean, the answer is J's minimum-norm least-squares solution: a truncated SVD up to
    DENSE_MAX_ORDER, LSMR beyond (flagged degenerate).
    """

    name: ClassVar[str] = "direct"
    refinement_steps: int = 30
    #: Cores (and B blocks) up to this order use LAPACK's dense LU (:data:`.plan.DENSE_ORDER`).
    dense_limit: int = DENSE_ORDER
    #: The program's variables no requested output reads (cvxpy's auxiliaries). One that
    #: meets only inactive rows (t of ``abs(u) <= 1`` with |u| < 1, free on [|u|, 1]) makes
    #: the core singular: it is set to 0 and left out of the LU before factorising, so that
    #: J's singularity there costs neither a failed factorisation nor a minimum-norm solve;
    #: the outputs do not depend on it (:func:`free_auxiliaries`).
    auxiliaries: Auxiliaries | None = dataclasses.field(default=None, compare=False)

    def init(self, operator: KKTOperator) -> _DirectState:
        J = operator.as_matrix()
        peel = operator.pattern.plan.singletons(operator)
        reduced = peel if self.auxiliaries is None else \
            free_auxiliaries(operator, peel, self.auxiliaries)
        if reduced is not peel:
            without = self._factor_core(operator, J, reduced)
            if not without.singular:
                return without
        state = self._factor_core(operator, J, peel)
        if state.singular and J.shape[0] <= DENSE_MAX_ORDER:
            state.truncated = TruncatedInverse(J.toarray(), state.limit.value)
        return state

    def _factor_core(self, operator: KKTOperator, J: sp.csc_matrix,
                     peel: Singletons) -> _DirectState:
        """The state for J with ``peel``'s pairs eliminated and its core factorised (its
        Schur complement after the 2×2 pair pivots, for a large core)."""
        core, N = peel.core, J.shape[0]
        plan = operator.pattern.plan
        filled = plan.filled  # what earlier elements' factorisations showed
        is_dense = lambda order: (order <= self.dense_limit and N <= 4 * self.dense_limit) or (
            N <= DENSE_MAX_ORDER and J.nnz >= DENSE_FRACTION * N * N) or (
            order <= DENSE_MAX_ORDER and filled.get("core", False))
        pairs = None
        if core.size > self.dense_limit and plan.pairs.p.size:  # a large core: pairs first
            at = PairElimination.positions(core, plan.pairs.p, plan.pairs.q)
            if at is not None:
                J_core = sp.csc_matrix(J[core][:, core]) if core.size < N else J
                # S formed densely where it will be factorised so (from the core densified:
                # up to a dense J's largest order)
                found = PairElimination.of(J_core, *at, dense=is_dense(at[0].size)
                                           and core.size <= DENSE_MAX_ORDER)
                if found is not None:
                    pairs, S = found
        order = pairs.rest.size if pairs is not None else core.size
        dense = is_dense(order)
        if pairs is not None:
            J_RR = S.toarray() if dense and sp.issparse(S) else S
        elif dense and N <= DENSE_MAX_ORDER:  # slicing a small dense J beats sparse indexing
            J_RR = J.toarray()[np.ix_(core, core)]
        else:
            J_RR = sp.csc_matrix(J[core][:, core]) if core.size < N else J.copy()
            J_RR.eliminate_zeros()  # D − I = 0 on active rows: stored zeros steer the ordering
            J_RR = J_RR.toarray() if dense else J_RR
        kept = core if pairs is None else core[pairs.rest]
        limit = plan.condition_limit(operator)
        lu, singular = self._factorise(J_RR, int(np.count_nonzero(kept < operator.n)), dense,
                                       filled, limit)
        return _DirectState(operator, J, peel, J_RR, lu, singular, limit, pairs=pairs)

    def _factorise(self, J_RR: sp.csc_matrix | FloatArray, p: int, dense: bool,
                   filled: dict[str, bool], limit: ConditionLimit,
                   ) -> tuple[DenseLU | SparseLU | _AntiDiagonalLU | None, bool]:
        """(factor, singular): one LU of B when J_RR = [[0, Bᵀ], [B, 0]] (p × p blocks),
        else of J_RR; no factor where it is singular or near-singular (:class:`DenseLU`'s
        rule: the caller answers by minimum norm). A sparse LU that fills in (``_fills``)
        is remembered in ``filled``, so that the program's later elements factorise that
        block densely."""
        B = anti_diagonal(J_RR, p)
        try:
            if B is not None:  # B singular: so is J_RR
                order = B.shape[0]
                dense_B = order <= self.dense_limit or (order <= DENSE_MAX_ORDER
                                                        and filled.get("basis", False))
                lu = _AntiDiagonalLU(B, dense_B, limit)
                if _fills(lu.lu, order):
                    filled["basis"] = True
                lu.lu.checked = True  # here, by its own estimate (B's, not J_RR's)
                return (None, True) if limit.exceeded(lu.lu.condition()) else (lu, False)
            lu = _lu(J_RR, dense, limit)
        except RuntimeError:  # exactly singular
            return None, True
        if _fills(lu, J_RR.shape[0]):
            filled["core"] = True
        if not lu.dense:  # checked on its first solve, with the probe in the same call
            return lu, False
        return (None, True) if limit.exceeded(lu.condition()) else (lu, False)

    def compute(self, state, rhs, transpose):
        if state.lu is not None and state.lu.near_singular:  # found on its first solve
            state = self._near_singular(state)
        if state.truncated is not None:
            z = state.truncated.solve(rhs, transpose)
            J = state.J.T if transpose else state.J
            return z, SolveStats(relative_residual(J @ z - rhs, rhs), 0, True, degenerate=True)
        if state.lu is not None:
            J = state.J.T if transpose else state.J
            peel = state.peel.T if transpose else state.peel
            z, r_core = peel.reduce(J, rhs)
            pairs = state.pairs
            r_S = r_core if pairs is None else pairs.reduce(r_core, transpose)
            z_S, steps = self._refined_solve(state, r_S, transpose)
            if state.lu.near_singular:
                return self.compute(state, rhs, transpose)
            z_core = z_S if pairs is None else pairs.complete(r_core, z_S, transpose)
            z = peel.complete(J, z, z_core, rhs)
            res = relative_residual(J @ z - rhs, rhs)
            if np.all(np.isfinite(z)) and res <= DEGENERACY_TOL:
                return z, SolveStats(res, steps, True, degenerate=state.singular)
        op = state.operator.T if transpose else state.operator
        z, iters = _min_norm(op, rhs)
        return z, SolveStats(_residual(op, z, rhs), iters, True, degenerate=True)

    def null_space(self, state: _DirectState) -> FloatArray | None:
        found = state.minimum_norm.truncated if state.minimum_norm is not None else None
        return _null(state.truncated or found)

    def _near_singular(self, state: _DirectState) -> _DirectState:
        """The state of a core whose first solve found it near-singular: no factor, J's
        truncated minimum-norm solver (kept on the state for later solves)."""
        if state.minimum_norm is None:
            N = state.J.shape[0]
            truncated = (TruncatedInverse(state.J.toarray(), state.limit.value)
                         if N <= DENSE_MAX_ORDER else None)
            state.minimum_norm = dataclasses.replace(state, lu=None, singular=True,
                                                     truncated=truncated)
        return state.minimum_norm

    def _refined_solve(self, state: _DirectState, rhs: FloatArray,
                       transpose: bool) -> tuple[FloatArray, int]:
        """Solve with J_RR's LU plus iterative refinement (polishes the last digits, and
        carries a single-precision LU to double precision's residual, else that LU is
        redone)."""
        J = state.J_RR.T if transpose else state.J_RR
        z = state.lu.solve(rhs, transpose)
        if state.lu.near_singular:  # the first solve's condition check says so
            return z, 0
        res, steps = relative_residual(J @ z - rhs, rhs), 0
        while steps < self.refinement_steps and res > 1e-13 and np.all(np.isfinite(z)):
            z = z + state.lu.solve(rhs - J @ z, transpose)
            new = relative_residual(J @ z - rhs, rhs)
            steps += 1
            if new > 0.5 * res:
                break
            res = new
        if not res <= MIXED_TOL and state.lu.to_double():
            z, more = self._refined_solve(state, rhs, transpose)
            steps += more
        return z, steps


#: Dense LUs from :data:`.plan.MIXED_MIN_ORDER` on are single-precision ones, their solves
#: refined in double against J itself (``Direct._refined_solve``), the scheme of LAPACK's
#: dsgesv: two or three steps reach double precision's residual when cond(J) is well below
#: 1/eps_single; if they do not, the LU is redone in double. The relative residual
#: refinement must reach (a double LU's gives ~1e-14 to 1e-13):
MIXED_TOL = 1e-12
#: A single-precision LU whose condition estimate is above this is redone in double before
#: the near-singularity test (float32's estimate is unreliable from about 1/eps_single).
SINGLE_CONDITION_MAX = 1e5


class DenseLU:
    """LAPACK's LU of a dense matrix (getrf), in single precision from ``MIXED_MIN_ORDER``
    on (``to_double`` redoes it), with ``solve(rhs, transpose)``.

    The one rule for a singular matrix, shared by every dense factorisation here: an
    exactly zero or non-finite pivot raises ``RuntimeError`` (as SuperLU does), and
    :meth:`condition` (gecon's cond₁ estimate) above J's limit means
    near-singular; either way the caller answers by J's minimum-norm least-squares solve,
    flagged degenerate (:mod:`.conditioning`)."""

    dense = True
    #: checked by the caller through :meth:`condition` when factorised, never on a solve
    near_singular = False

    def __init__(self, M: sp.csc_matrix | FloatArray, single: bool | None = None) -> None:
        self.matrix = M  # kept for ``to_double`` and ``condition``
        self.single = M.shape[0] >= MIXED_MIN_ORDER if single is None else single
        self.factor = self._factorise(np.float32 if self.single else np.float64)

    def _factorise(self, dtype: type) -> tuple[npt.NDArray[np.floating], Any]:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", sla.LinAlgWarning)  # singular: raised below
            factor = sla.lu_factor(_dense(self.matrix, dtype), check_finite=False)
        pivots = np.abs(np.diag(factor[0]))
        if not np.all(np.isfinite(pivots)) or pivots.min(initial=1.0) == 0.0:
            raise RuntimeError("Factor is exactly singular")
        return factor

    def condition(self) -> float:
        """gecon's cond₁ estimate (a single-precision LU is redone in double where the
        estimate nears 1/eps_single, beyond which it says little)."""
        cond = lu_condition(self.factor, norm1(self.matrix))
        if self.single and cond > SINGLE_CONDITION_MAX and self.to_double():
            cond = lu_condition(self.factor, norm1(self.matrix))
        return cond

    def to_double(self) -> bool:
        """Refactorise a single-precision LU in double; False if it already was double."""
        if not self.single:
            return False
        self.factor, self.single = self._factorise(np.float64), False
        return True

    def solve(self, rhs: FloatArray, transpose: bool) -> FloatArray:
        trans = 1 if transpose else 0
        if self.single:
            z = sla.lu_solve(self.factor, rhs.astype(np.float32), trans, check_finite=False)
            return z.astype(np.float64)
        return sla.lu_solve(self.factor, rhs, trans, check_finite=False)


class SparseLU:
    """SuperLU's LU (COLAMD ordering) with ``solve(rhs, transpose)``; an exactly singular
    matrix raises ``RuntimeError``. Its condition is estimated on the first solve, with a
    probe column in the same SuperLU call (a separate solve costs ~30 µs at order 900):
    ``near_singular`` is set there (the caller then answers by minimum norm, as for
    :class:`DenseLU`)."""

    dense = False
    single = False

    def __init__(self, M: sp.csc_matrix, limit: ConditionLimit) -> None:
        self.matrix, self.limit = M, limit
        self.factor = (BorderedFactor.of(M, DENSE_MAX_ORDER)
                       or spla.splu(M, permc_spec="COLAMD"))
        self.checked = False
        self.near_singular = False

    def condition(self) -> float:
        """Probes, then Hager–Higham's estimator (:func:`sparse_lu_condition`)."""
        return sparse_lu_condition(self.factor, self.matrix)

    def to_double(self) -> bool:
        return False

    def solve(self, rhs: FloatArray, transpose: bool) -> FloatArray:
        trans = "T" if transpose else "N"
        if self.checked or not rhs.shape[0]:  # SuperLU solves column-major blocks fastest
            return self.factor.solve(np.asfortranarray(rhs), trans=trans)
        k = rhs.shape[1]
        both = np.empty((rhs.shape[0], k + 1), order="F")
        both[:, :k] = rhs
        both[:, k] = probe(rhs.shape[0])
        z = self.factor.solve(both, trans=trans)
        self.checked = True
        cond = sparse_lu_condition(self.factor, self.matrix, transpose, probed=z[:, k])
        self.near_singular = self.limit.exceeded(cond)
        return z[:, :k]


def _lu(M: sp.csc_matrix | FloatArray, dense: bool, limit: ConditionLimit) -> DenseLU | SparseLU:
    return DenseLU(M) if dense else SparseLU(M, limit)


def _dense(J: sp.csc_matrix | FloatArray, dtype: type) -> npt.NDArray[np.floating]:
    """J as a dense array of dtype; a sparse J is converted before it is densified (an order
    1,000 basis in single precision: 0.08 ms, against 0.19 ms through a double copy)."""
    return J.astype(dtype).toarray() if sp.issparse(J) else np.asarray(J, dtype=dtype)


class _AntiDiagonalLU:
    """J_RR = [[0, Bᵀ], [B, 0]] from one LU of B: B z_p = r_d and Bᵀ z_d = r_p (J_RR is
    symmetric, so the transposed solve is the same). Factorising J_RR whole costs about
    twice B's fill with any of SuperLU's column orderings (sparse_lp: 1.1M to 1.35M against
    0.61M, 80 ms against 40 ms)."""

    #: checked when factorised (``Direct._factorise``), never on a solve
    near_singular: ClassVar[bool] = False

    def __init__(self, B: sp.csc_matrix | FloatArray, dense: bool, limit: ConditionLimit) -> None:
        self.p = B.shape[0]
        self.lu = _lu(B, dense, limit)

    def to_double(self) -> bool:
        return self.lu.to_double()

    def solve(self, rhs: FloatArray, transpose: bool) -> FloatArray:
        p = self.p
        return np.concatenate([self.lu.solve(rhs[p:], False), self.lu.solve(rhs[:p], True)])


@dataclass
class _DirectState:
    """Direct's factorisation: J, its singleton elimination and the factorised core
    J_RR = J[core][:, core] (or, with ``pairs``, its Schur complement after the 2×2 pair
    pivots); ``minimum_norm`` the state that replaces it where a sparse
    core's first solve finds it near-singular (:meth:`Direct._near_singular`)."""

    operator: KKTOperator
    J: sp.csc_matrix
    peel: Singletons
    J_RR: sp.csc_matrix | FloatArray  # dense for small systems
    lu: DenseLU | SparseLU | _AntiDiagonalLU | None
    singular: bool  # exactly or nearly (condition estimate above J's limit)
    limit: ConditionLimit
    truncated: TruncatedInverse | None = None  # J's minimum-norm solver where singular
    minimum_norm: _DirectState | None = None
    pairs: PairElimination | None = None  # J_RR is then the core's Schur complement S


@dataclass(frozen=True)
class Dense(AbstractLinearSolver):
    """Dense LU of J (LAPACK) for small problems; where its condition estimate is above
    J's limit, J's truncated minimum-norm solver instead."""

    name: ClassVar[str] = "dense"

    def init(self, operator: KKTOperator) -> _DenseState:
        J = operator.as_matrix().toarray()
        limit = operator.pattern.plan.condition_limit(operator)
        lu = _condition_checked(J, limit)
        return _DenseState(operator, J, lu, limit,
                           None if lu is not None else TruncatedInverse(J, limit.value))

    def compute(self, state, rhs, transpose):
        op = state.operator.T if transpose else state.operator
        if state.lu is not None:
            z = state.lu.solve(rhs, transpose)
            res = _residual(op, z, rhs)
            if np.all(np.isfinite(z)) and res <= DEGENERACY_TOL:
                return z, SolveStats(res, 0, True)
        z = state.minimum_norm().solve(rhs, transpose)
        return z, SolveStats(_residual(op, z, rhs), 0, True, degenerate=True)

    def null_space(self, state: _DenseState) -> FloatArray | None:
        return _null(state.truncated)


def _condition_checked(J: FloatArray, limit: ConditionLimit) -> DenseLU | None:
    """J's double-precision :class:`DenseLU`, or None where its condition estimate is above
    ``limit`` or it is singular."""
    try:
        lu = DenseLU(J, single=False)
    except RuntimeError:
        return None
    return None if limit.exceeded(lu.condition()) else lu


@dataclass
class _DenseState:
    """Dense's factorisation: J, its LU (None where near-singular) and, once needed, its
    truncated minimum-norm solver."""

    operator: KKTOperator
    J: FloatArray
    lu: DenseLU | None
    limit: ConditionLimit
    truncated: TruncatedInverse | None = None

    def minimum_norm(self) -> TruncatedInverse:
        if self.truncated is None:
            self.truncated = TruncatedInverse(self.J, self.limit.value)
        return self.truncated


#: Extra LSQR/LSMR runs on the residual of a solve that stopped above btol (see ``_solve``):
#: an MPC of 908 unknowns whose J is singular (free auxiliaries: the zoo's abs_box_large)
#: stopped at 7e-7 (LSQR) and 6e-7 (LSMR), ⟨w, J⁻¹u⟩ against ⟨J⁻ᵀw, u⟩ off by 8e-7 and
#: 3e-5; one more run each: 3e-14 and 2e-12, off by 2e-14 and 7e-12.
REFINE_PASSES = 2


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

    def init(self, operator: KKTOperator) -> _IterativeState:
        return _IterativeState(operator)

    def null_space(self, state: _IterativeState) -> FloatArray | None:
        return _null(state._truncated)

    def compute(self, state, rhs, transpose):
        z, stats = self._solve(state.operator, rhs, transpose)
        if stats.fell_back or not (stats.degenerate or state.near_singular()):
            return z, stats
        # singular or near-singular J: the minimum-norm answer, as the factorising modes give
        minimum_norm = state.minimum_norm()
        if minimum_norm is not None:
            z = minimum_norm.solve(rhs, transpose)
            op = state.operator.T if transpose else state.operator
            stats = SolveStats(_residual(op, z, rhs), stats.iterations, True)
        return z, dataclasses.replace(stats, degenerate=True)

    def _solve(self, state: KKTOperator, rhs: FloatArray,
               transpose: bool) -> tuple[FloatArray, SolveStats]:
        """Every column by the iterative method; Direct where it stalls."""
        op = state.T if transpose else state
        lin = spla.LinearOperator((op.in_size, op.in_size), matvec=op.mv, rmatvec=op.T.mv)
        limit = self.iter_lim or 10 * op.in_size
        cols, iters, stalled, lsq = [], 0, False, False
        for k in range(rhs.shape[1]):
            z, istop, it = self._run(lin, rhs[:, k], limit)
            iters += it
            # LSQR/LSMR stop at ‖r‖ ≤ btol‖b‖ + atol‖J‖‖z‖: where ‖J‖‖z‖ ≫ ‖b‖ (a singular
            # or badly scaled J) that is a relative residual of 1e-7 to 1e-6 and gradients
            # off in the fifth digit; a run on the residual (at most REFINE_PASSES) brings
            # it to btol, as a direct solve's refinement does
            for _ in range(REFINE_PASSES):
                if istop not in (1, 4):
                    break
                r = rhs[:, k] - op.mv(z)
                if not np.linalg.norm(r) > self.btol * np.linalg.norm(rhs[:, k]):
                    break
                dz, istop, it = self._run(lin, r, limit)
                z, iters = z + dz, iters + it
            cols.append(z)
            stalled |= istop in (3, 6, 7)
            lsq |= istop in (2, 5)
        z = np.stack(cols, axis=1)
        if stalled:
            direct = Direct()
            z, stats = direct.compute(direct.init(state), rhs, transpose)
            return z, SolveStats(stats.residual, iters, stats.converged, True, stats.degenerate)
        return z, SolveStats(_residual(op, z, rhs), iters, True, degenerate=lsq)


@dataclass
class _IterativeState:
    """The operator, and (up to DENSE_MAX_ORDER, found on the first solve) whether J is
    near-singular, with its minimum-norm solver: LSQR and LSMR stop with a converged flag
    on a consistent near-singular system, and their condition estimate (``acond``) grows
    only with the iterations done, so J is factorised once to check (these modes are the
    matrix-free reference, not the fast path)."""

    operator: KKTOperator
    _J: FloatArray | None = None
    _condition: float | None = None
    _truncated: TruncatedInverse | None = None

    @functools.cached_property
    def _limit(self) -> ConditionLimit:
        return self.operator.pattern.plan.condition_limit(self.operator)

    def _dense(self) -> FloatArray | None:
        if self._J is None and self.operator.in_size <= DENSE_MAX_ORDER:
            self._J = self.operator.as_matrix().toarray()
        return self._J

    def near_singular(self) -> bool:
        if self._condition is None:
            J = self._dense()
            if J is None:
                self._condition = 0.0  # too large to check: istop alone decides
            else:
                self._condition = (0.0 if _condition_checked(J, self._limit) is not None
                                   else np.inf)
        return self._condition > 0.0

    def minimum_norm(self) -> TruncatedInverse | None:
        """J's truncated minimum-norm solver (None beyond DENSE_MAX_ORDER)."""
        if self._truncated is None and self._dense() is not None:
            self._truncated = TruncatedInverse(self._J, self._limit.value)
        return self._truncated


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
    """The strategy for a mode name, with LSQR/LSMR tolerances from ``options``
    (``"embedding"``, a chain on another operator, is dispatched before this, by
    ``batch.make_strategy``; it is named in the error for the user)."""
    if mode == "direct":
        return Direct()
    if mode == "dense":
        return Dense()
    kwargs = {k: options[k] for k in ("atol", "btol", "iter_lim") if k in options}
    if mode == "lsqr":
        return LSQR(**kwargs)
    if mode == "lsmr":
        return LSMR(**kwargs)
    raise ValueError("derivative mode must be one of 'direct', 'lsqr', 'lsmr', 'dense', "
                     f"'embedding'; got {mode!r}.")

