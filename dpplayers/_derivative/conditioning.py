"""One rule for singular and near-singular J: detect it cheaply, answer by minimum norm.

Where the canonical program's solution is not unique (an auxiliary variable free on a
segment, e.g. t in ``lambda_sum_largest``'s k·t + tr Z, a tie in an LP), J is singular at
every solution. An interior-point solver returns a point *near* the segment's centre, where
J is only nearly singular (cond 1e8 to 1e13, growing as its tolerance tightens): its LU
succeeds, the residual test passes, and the solve's huge component along the near-null
direction leaks into the derivative (2–5% off there, up to 30% reported; unflagged) — at
any tolerance, as the component is (inconsistency ~ δ) / (σ_min ~ δ). An exact zero pivot
does not show it; the condition number does.

Every route estimates the condition number of the matrix it factorises and treats J as
singular where it exceeds ``CONDITION_LIMIT``: LAPACK's gecon (cond₁) on a dense LU (O(order²)
next to the O(order³) factorisation); elsewhere a probe: the solution z = M⁻¹g of a fixed
random ±1 column g gives ‖M‖_F ‖z‖₂ / ‖g‖₂ (:func:`probe_estimate`), and an estimate above
``PROBE_SUSPECT`` goes to a sharper estimator. SuperLU's first solve carries the probe column
and hands a suspect estimate to Hager–Higham's (``onenormest``, cond₁). The batched solve
(numpy keeps no LU, and at batch 1 gecon would cost as much as the solve) solves the probe in
the same LAPACK call (per element, with the LU's U alone: one triangular solve) and hands a
suspect element to ``Direct``, whose gecon decides: a probe estimate can fall one to three
orders short of cond (seen: cond 2e7 probed below 1e7). Where every block of D is 1×1
(below) gecon runs on the batched LU itself against that J's limit instead: an MPC's
well-posed elements probe above the threshold often (12% of mpc20's), and ``Direct`` took
~1.4 ms each to accept them.
The answer there is the minimum-norm least-squares solution of the full J with singular
values below σ_max / CONDITION_LIMIT dropped (``TruncatedInverse``: what
``numpy.linalg.lstsq(J, r, rcond=1 / CONDITION_LIMIT)`` returns), flagged ``degenerate``.

The limit, from the data (gecon's cond₁ estimates of the block ``Direct`` factorises, at
batch 1 and two to five parameter points each): every problem of the tests' zoo at 1.0 to
3.0e2 and of ``benchmarks/`` at 14 to 3.4e3 (qp200, the largest; sparse_lp's basis 93);
the ``lambda_sum_largest`` problem of issue #17 (tests/test_degenerate.py) at Clarabel's
solution 1.5e8 to 5.5e8 (tolerances 1e-3 and 1e-4), 3.4e9 to 1.5e10 (1e-6), 2.4e11 to
1.5e12 (default 1e-8), 2.3e12 to 1.9e13 (1e-10), and at SCS's 1.6e16 to inf (singular to
rounding). 1e6 lies 290 times above the worst well-posed problem and 150 times below the
least degenerate one seen.

That data is from cones whose projection derivative varies continuously (SOC, PSD,
exponential, power): there an iterate beside a non-unique face makes J *nearly* singular.
Where every block of D is 1×1 (zero and nonnegative cones: LPs, QPs, MPCs), D is exactly
0 or 1, J is the KKT matrix of the active set, and a non-unique solution makes it singular
to rounding (cond₁ 1e15 to inf), while well-posed problems reach far past 1e6: a
horizon-20 MPC with random dynamics (``benchmarks/``' ``mpc20``) has cond₁ 5e2 to 9e6 over
128 draws (median 8e3), and its LU answer matches finite differences there, where the
truncated answer was wrong by a factor of ten and of the opposite sign. Such J use
``POLYHEDRAL_CONDITION_LIMIT`` (:class:`ConditionLimit`), and so does an element where
every larger block of D is 0 or I (the point strictly inside the cone or its polar there:
an inactive norm bound, a strictly feasible LMI), where D is as constant as a polyhedral
cone's; the check on D runs only for an estimate above ``CONDITION_LIMIT``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import blas

if TYPE_CHECKING:
    from .kkt import KKTOperator

FloatArray = npt.NDArray[np.float64]

#: A J (or the block of it a route factorises) whose estimated cond₁ exceeds this is
#: treated as singular: minimum-norm answer, flagged degenerate (see the module docstring).
CONDITION_LIMIT = 1e6
#: A probe estimate above this is not trusted either way: the element goes to a sharper
#: estimator (gecon, or Hager–Higham's). The batched solve's estimate: at most 3.3e2 on
#: the zoo and the batched benchmarks (qp_nonneg_least_squares, qp50), 6e7 to 9e7 on the
#: tied-eigenvalue problem at Clarabel tolerance 1e-3, 6e10 and more at its default.
PROBE_SUSPECT = 1e4
#: The limit for J whose D has 1×1 blocks only (see the module docstring): 1e4 times
#: below rounding's singular J, 1e5 times above the worst well-posed one seen; an LU with
#: iterative refinement stays accurate there (cond · eps ≈ 1e-4).
POLYHEDRAL_CONDITION_LIMIT = 1e12


@dataclass
class ConditionLimit:
    """One element's limit: ``CONDITION_LIMIT``, or ``POLYHEDRAL_CONDITION_LIMIT`` where D
    is locally constant (``constant``, asked only for an estimate between the two)."""

    constant: Callable[[], bool]
    _value: float | None = None

    @property
    def value(self) -> float:
        if self._value is None:
            self._value = POLYHEDRAL_CONDITION_LIMIT if self.constant() else CONDITION_LIMIT
        return self._value

    def exceeded(self, cond: float) -> bool:
        """The estimate ``cond`` says J is singular (NaN: it does)."""
        return not cond <= CONDITION_LIMIT and not cond <= self.value


def lu_condition(factor: tuple[npt.NDArray[np.floating], npt.NDArray[np.int32]],
                 norm1: float) -> float:
    """cond₁ estimate of a matrix from its ``scipy.linalg.lu_factor`` and its 1-norm
    (LAPACK gecon; inf where a pivot is zero or not finite)."""
    lu = factor[0]
    if not lu.shape[0]:
        return 1.0
    gecon = sla.get_lapack_funcs("gecon", (lu,))
    with np.errstate(all="ignore"):
        rcond, info = gecon(lu, norm1, norm="1")
    return float(1.0 / rcond) if info == 0 and rcond > 0 and np.isfinite(rcond) else np.inf


def norm1(M: FloatArray, transpose: bool = False) -> float:
    """‖M‖₁ (the largest column sum), or ‖Mᵀ‖₁ = ‖M‖∞ with ``transpose``, dense or sparse.
    CSC/CSR are summed straight off their arrays (``abs(M).sum(axis=0)`` builds two sparse
    matrices, and ``M.T`` another: ~20 µs each at order 900)."""
    if not M.shape[0]:
        return 0.0
    if sp.issparse(M) and M.format in ("csc", "csr"):
        compressed_axis_sums = (M.format == "csc") != transpose  # column sums of CSC
        if compressed_axis_sums:
            starts = M.indptr[:-1]
            filled = starts < M.indptr[1:]  # reduceat reads one entry for an empty slice
            return float(np.add.reduceat(np.abs(M.data), starts[filled]).max(initial=0.0))
        return float(np.bincount(M.indices, weights=np.abs(M.data)).max(initial=0.0))
    return float(np.asarray(abs(M).sum(axis=1 if transpose else 0)).max())


def batch_residuals(res_sq: FloatArray, rhs: FloatArray) -> FloatArray:
    """Each element's relative residual, max over its columns of ‖J z − r‖ / ‖r‖, from the
    squared residual norms res_sq (b, q) and right-hand sides rhs (b, N, q); inf where the
    residual is not finite (a singular J's z), so that no test passes it: the batched
    executors' clean-solve test."""
    ratio = res_sq / np.maximum(np.vecdot(rhs, rhs, axis=1), 1e-300)
    residual = np.sqrt(ratio.max(axis=1, initial=0.0))
    return np.where(residual <= np.inf, residual, np.inf)  # NaN → inf


@functools.cache
def probe(order: int) -> FloatArray:
    """A fixed random ±1 column g (order,): M⁻¹g meets M's smallest singular direction with
    high probability, so ‖M⁻¹g‖₂ / ‖g‖₂ estimates ‖M⁻¹‖₂ from below within a small factor
    (the 100-fold margin between PROBE_SUSPECT and CONDITION_LIMIT covers it)."""
    g = np.random.default_rng(order).choice([-1.0, 1.0], size=order)
    g.flags.writeable = False
    return g


def probe_estimate(M: FloatArray | sp.spmatrix, z: FloatArray) -> float:
    """cond estimate ‖M‖_F ‖M⁻¹g‖₂ / ‖g‖₂ from z = M⁻¹ :func:`probe` (‖g‖₂² is the order;
    inf where z is not finite): two BLAS calls, where ‖M‖₁ of a sparse M costs ~10 µs at
    order 900. ‖M‖_F ≥ ‖M‖₂ and the probe bounds ‖M⁻¹‖₂ from below, as for ‖·‖₁."""
    if not z.size:
        return 1.0
    values = (M.data if sp.issparse(M) else M).ravel()
    # Python floats: an overflow gives inf, no numpy warning to silence
    est = math.sqrt(blas.ddot(values, values) * blas.ddot(z, z) / z.size)
    return est if math.isfinite(est) else np.inf


def sparse_lu_condition(lu: spla.SuperLU, M: sp.spmatrix, transpose: bool = False,
                        probed: FloatArray | None = None) -> float:
    """cond estimate of M (Mᵀ with ``transpose``) from its SuperLU: a probe solve first
    (``probed``: its solution, where the caller already has it), then Hager–Higham's
    estimator of ‖M⁻¹‖₁ (a few solves with M and Mᵀ) where that exceeds PROBE_SUSPECT."""
    order = M.shape[0]
    if not order:
        return 1.0
    trans, back = ("T", "N") if transpose else ("N", "T")
    if probed is None:
        probed = lu.solve(probe(order)[:, None].copy(order="F"), trans=trans)[:, 0]
    cond = probe_estimate(M, np.ascontiguousarray(probed))
    if PROBE_SUSPECT < cond < np.inf:
        inverse = spla.LinearOperator((order, order), dtype=np.float64,
                                      matvec=lambda g: lu.solve(g, trans=trans),
                                      rmatvec=lambda g: lu.solve(g, trans=back))
        with np.errstate(all="ignore"):
            cond = max(cond, norm1(M, transpose) * spla.onenormest(inverse))
    return float(cond) if np.isfinite(cond) else np.inf


class TruncatedInverse:
    """The minimum-norm least-squares solver of J (and Jᵀ) with singular values below
    σ_max / ``limit`` (J's :class:`ConditionLimit`) treated as zero: one SVD, reused for
    every right-hand side."""

    def __init__(self, J: FloatArray, limit: float) -> None:
        U, sigma, Vt = np.linalg.svd(J, full_matrices=False)
        keep = sigma > sigma.max(initial=0.0) / limit
        self.U, self.inverse, self.Vt = U[:, keep], 1.0 / sigma[keep], Vt[keep]
        self.null = Vt[~keep].T  # (order, r): the dropped right singular vectors

    def solve(self, rhs: FloatArray, transpose: bool) -> FloatArray:
        """J⁺ rhs (or (Jᵀ)⁺ rhs) for rhs (N, k)."""
        if transpose:  # Jᵀ = V Σ Uᵀ
            return self.U @ (self.inverse[:, None] * (self.Vt @ rhs))
        return self.Vt.T @ (self.inverse[:, None] * (self.U.T @ rhs))


#: A null direction of J moves a requested output by more than this (relative to the
#: largest entry of R): J's minimum-norm answer chose one of many derivatives. Seen: an
#: auxiliary free on a segment (an inactive norm bound, the tied-eigenvalue problem of
#: tests/test_degenerate.py) 1e-17 to 1e-15 where J is singular to rounding, 5e-7 to 1e-6
#: at Clarabel's nearly singular J (cond 6e10 to 3e11); a tie in an LP 0.5, redundant
#: equalities' duals 0.89.
OUTPUT_NULL_TOL = 1e-3
#: The largest J whose null space is computed to tell (an SVD); beyond, assume it does.
NULL_SPACE_MAX_ORDER = 1500


def outputs_ambiguous(op: KKTOperator, R: sp.spmatrix, null: FloatArray | None = None) -> bool:
    """Whether J's (near-)null space, the singular values its condition limit drops, moves
    the outputs R [dx; dy] (dx = du, dy = D dv): where it does not (a cvxpy auxiliary free
    on a segment, e.g. the t of an inactive norm bound), every least-squares answer gives
    the outputs one derivative, the minimum-norm one included. ``null``: that space, where
    the minimum-norm solve computed it (:attr:`TruncatedInverse.null`)."""
    if null is None:
        if op.in_size > NULL_SPACE_MAX_ORDER:
            return True
        null = TruncatedInverse(op.as_matrix().toarray(),
                                op.pattern.plan.condition_limit(op).value).null
    n = op.pattern.n
    moved = R @ np.concatenate([null[:n], op.D.mv(null[n:])])
    scale = float(np.abs(R.data).max(initial=1.0)) if sp.issparse(R) else 1.0
    return bool(np.abs(moved).max(initial=0.0) > OUTPUT_NULL_TOL * scale)
