"""The dense QP route's data and linear algebra (:mod:`.dense_qp` iterates with them).

A batch's data as dense stacks (:class:`DenseBatch`; an array with a leading 1 is shared by
the batch), the two eliminations of the interior-point Newton system (:class:`Schur` where P
is definite, :class:`Augmented` otherwise), each with the exact solve on an active set that
the polish uses, and a stack of per-element factorisations (:class:`Stack`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.linalg import blas, lapack

from .. import _lapack
from ..cones import ConeDims

FloatArray = npt.NDArray[np.float64]

#: Systems of at least this order are factorised per element by LAPACK (one factorisation
#: serves both solves of an iteration, Cholesky where definite; P's Cholesky is kept for the
#: derivative); smaller ones by numpy's batched solve, twice. Measured, one thread, minimum
#: of 30 (2026-12-07, numpy 2.4.6, scipy 1.17.1): 128 systems of order 35 (qp50's Schur
#: complement) dpotrf and two dpotrs per element 1.74 ms against numpy's two batched solves
#: 2.67 ms (32 systems: 0.44 against 0.76 ms); order 50 (qp50's P: its Cholesky and a solve
#: with 36 columns, 128 of them) per element 8.5 ms against numpy's 11.1 ms; qp50's forward
#: with the threshold at 32 against 64, interleaved (two threads, load 4.8): 0.81× at batch
#: 32, 0.86× at 128. (It was 64 when numpy's batched call won at order 35.) The crossing:
#: order 25 (qp50's inequalities, its equalities eliminated: :class:`Equalities`) 0.74
#: against 1.04 ms for 128, 0.19 against 0.25 for 32; order 16 0.54 against 0.44 ms.
LOOP_MIN_ORDER = 20

@dataclass(frozen=True)
class DenseBatch:
    """A batch's data as dense stacks; an array with a leading 1 is shared by the batch."""

    P: FloatArray | None  # (B or 1, n, n), symmetric
    A: FloatArray  # (B or 1, m, n)
    b: FloatArray  # (B or 1, m)
    c: FloatArray  # (B or 1, n)
    zero: int  # equality rows first
    size: int  # elements


    def take(self, keep: npt.NDArray[np.intp]) -> DenseBatch:
        """The elements ``keep`` (shared arrays stay shared)."""
        def sub(a: FloatArray | None) -> FloatArray | None:
            return a if a is None or a.shape[0] == 1 else a[keep]
        return DenseBatch(sub(self.P), sub(self.A), sub(self.b), sub(self.c), self.zero,
                          keep.size)


def dense_batch(P_data: FloatArray, P_rows: npt.NDArray, P_cols: npt.NDArray,
                A_data: FloatArray, A_rows: npt.NDArray, A_cols: npt.NDArray,
                b: FloatArray, c: FloatArray, n: int, cones: ConeDims,
                size: int) -> DenseBatch:
    """The program's data columns (entries, B or 1) on fixed patterns → dense stacks
    (P's upper triangle mirrored)."""
    m = b.shape[0]
    A = np.zeros((A_data.shape[1], m, n))
    A[:, A_rows, A_cols] = A_data.T
    P = None
    if P_data.shape[0]:
        P = np.zeros((P_data.shape[1], n, n))
        P[:, P_rows, P_cols] = P_data.T
        P[:, P_cols, P_rows] = P_data.T
    return DenseBatch(P, A, np.ascontiguousarray(b.T), np.ascontiguousarray(c.T), cones.zero,
                      size)


def mv(M: FloatArray, v: FloatArray) -> FloatArray:
    """Batched matrix–vector product (M (B or 1, p, q), v (B, q)) → (B, p)."""
    return (M @ v[..., None])[..., 0]


def mtv(M: FloatArray, v: FloatArray) -> FloatArray:
    """Batched Mᵀv."""
    return (v[:, None, :] @ M)[:, 0, :]


class Stack:
    """Solves with a stack of matrices K (B, q, q), each factorised once for the two solves
    of an iteration: numpy's batched solve below LOOP_MIN_ORDER (one call for the batch;
    it refactorises per call, which is cheap there), else LAPACK per element (Cholesky
    where K is positive definite, through :mod:`dpplayers._lapack`, which lets the other
    chunks run meanwhile; LU otherwise). An element whose factorisation fails gets NaN (its
    iterates are then given up). K is the caller's C-ordered temporary: LAPACK factorises
    each element in place, through its Fortran-order view Kᵀ (no copy)."""

    def __init__(self, K: FloatArray, definite: bool) -> None:
        self.K, self.definite = K, definite
        self.loop = K.shape[1] >= LOOP_MIN_ORDER
        if self.loop and definite:
            self.failed = ~_lapack.potrf(K)
        elif self.loop:
            self.factors = [self._lu(Kk.T) for Kk in K]

    @staticmethod
    def _lu(Kt: FloatArray) -> tuple | None:
        """The LU factors of Kt (= Kᵀ), overwriting it."""
        lu, piv, info = lapack.dgetrf(Kt, overwrite_a=1)
        return (lu, piv) if info == 0 else None

    def solve(self, rhs: FloatArray) -> FloatArray:
        """K⁻¹ rhs for rhs (B, q)."""
        if not self.loop:
            try:
                return np.linalg.solve(self.K, rhs[..., None])[..., 0]
            except np.linalg.LinAlgError:  # some K is singular: NaN for those alone
                return np.stack([_solve_or_nan(Kk, r) for Kk, r in zip(self.K, rhs)])
        if self.definite:
            out = _lapack.potrs(self.K, np.array(rhs, order="C"))
            out[self.failed] = np.nan
            return out
        out = np.empty_like(rhs)
        for k, f in enumerate(self.factors):
            if f is None:
                out[k] = np.nan
            else:
                out[k] = lapack.dgetrs(f[0], f[1], rhs[k], trans=1)[0]  # (Kᵀ)ᵀ = K
        return out


def _solve_or_nan(K: FloatArray, rhs: FloatArray) -> FloatArray:
    try:
        return np.linalg.solve(K, rhs)
    except np.linalg.LinAlgError:
        return np.full_like(rhs, np.nan)


class PSolver:
    """Products and solves with a stack of positive definite P (B, n, n), and ‖P‖_F² per
    element: by the Cholesky factors the forward computed (``factors``, a C-ordered stack
    :func:`dpplayers._lapack.potrf` wrote, n >= LOOP_MIN_ORDER; P itself is then not kept),
    else with P by numpy's batched calls (refactorising: cheap below LOOP_MIN_ORDER)."""

    def __init__(self, P: FloatArray, factors: FloatArray | None) -> None:
        self.factors = factors
        self.P = P if factors is None else None
        flat = P.reshape(P.shape[0], -1)
        self.norm_sq = np.vecdot(flat, flat)

    def solve(self, rhs: FloatArray, which: npt.NDArray[np.intp]) -> FloatArray:
        """P_k⁻¹ rhs[i] for k = which[i], rhs (len(which), n, q)."""
        if self.factors is None:
            return np.linalg.solve(take_elements(self.P, which), rhs)
        out = np.ascontiguousarray(rhs.transpose(0, 2, 1))  # each element's Fortran order
        return _lapack.potrs(self.factors, out, which).transpose(0, 2, 1)

    def times(self, v: FloatArray, which: npt.NDArray[np.intp]) -> FloatArray:
        """P_k v[i] for k = which[i] (P = L Lᵀ from its factor: two triangular products)."""
        if self.factors is None:
            return take_elements(self.P, which) @ v
        out = np.empty_like(v)
        for i, k in enumerate(which):
            L = self.factors[k].T  # Fortran order: L in its lower triangle
            out[i] = blas.dtrmm(1.0, L, blas.dtrmm(1.0, L, v[i], lower=1, trans_a=1), lower=1)
        return out


def take_elements(a: FloatArray, which: npt.NDArray[np.intp]) -> FloatArray:
    """a[which], without a copy where ``which`` is every element in order."""
    whole = which.size == a.shape[0] and bool((which == np.arange(which.size)).all())
    return a if whole else a[which]


class KeptFactors:
    """What the forward's Schur elimination formed for a chunk of the batch, kept for the
    derivative (:mod:`dpplayers._derivative.qp_elements`): A, P's Cholesky factors
    (:class:`PSolver`) and M = A P⁻¹ Aᵀ, per element (rows ``zero`` on are inequalities).
    They depend on the data alone, not on the iterate. Not P itself nor P⁻¹Aᵀ, each as
    large as a factor or A, which the factors replace there: all of it is fresh memory on
    every call (qp200 at batch 128: P, P⁻¹Aᵀ, A, M and the factors kept, 38k page faults
    and 0.13–0.2 s of system time per forward, against 1–2k and under 0.06 s without).
    Not pickled (a copy of a Solution, or an answer sent back from a worker, unpickles as
    None: the derivative's generic path then serves)."""

    def __init__(self, A: FloatArray, P_solver: PSolver, M: FloatArray, zero: int) -> None:
        self.A, self.P_solver, self.M, self.zero = A, P_solver, M, zero

    def __reduce__(self) -> tuple:
        return (_dropped, ())


def _dropped() -> None:
    return None


class Schur:
    """P positive definite: dx = −P⁻¹(r_d + Aᵀ dy), and (A P⁻¹ Aᵀ + diag(0, D)) dy = rhs,
    of the order of the constraint count. P⁻¹Aᵀ, P⁻¹c and A P⁻¹ Aᵀ are formed once."""

    def __init__(self, data: DenseBatch, PinvATc: FloatArray, P_solver: PSolver) -> None:
        self.PinvAT, self.Pinv_c = PinvATc[:, :, :-1], PinvATc[:, :, -1]
        self.M = data.A @ self.PinvAT
        # the whole chunk's, before any take(): the derivative reuses them
        self.kept = KeptFactors(data.A, P_solver, self.M, data.zero)
        self.APc = mv(data.A, self.Pinv_c)
        self.zero = data.zero
        self.diagonal = np.arange(data.A.shape[1] - self.zero)
        self.eq = Equalities.of(self.M, self.zero)

    @staticmethod
    def setup(data: DenseBatch) -> tuple[FloatArray, PSolver] | None:
        """[P⁻¹Aᵀ, P⁻¹c] per element (B, n, m + 1) and the solver with P it was formed by,
        or None where some P is not positive definite."""
        n, m = data.A.shape[2], data.A.shape[1]
        P = np.broadcast_to(data.P, (data.size, n, n))
        if n < LOOP_MIN_ORDER:  # numpy's batched calls (one Cholesky to check definiteness)
            rhs = np.concatenate([np.broadcast_to(data.A.transpose(0, 2, 1), (data.size, n, m)),
                                  np.broadcast_to(data.c[:, :, None], (data.size, n, 1))],
                                 axis=2)
            try:
                np.linalg.cholesky(P)
            except np.linalg.LinAlgError:
                return None
            return np.linalg.solve(P, rhs), PSolver(P, None)
        factors = P.copy()
        if not _lapack.potrf(factors).all():
            return None
        # [A; cᵀ] per element in C order is [Aᵀ c] in Fortran order: solved in place
        rhs_t = np.empty((data.size, m + 1, n))
        rhs_t[:, :m] = data.A
        rhs_t[:, m] = data.c
        return _lapack.potrs(factors, rhs_t).transpose(0, 2, 1), PSolver(P, factors)

    def take(self, keep: npt.NDArray[np.intp]) -> None:
        self.PinvAT, self.Pinv_c, self.M, self.APc = (
            self.PinvAT[keep], self.Pinv_c[keep], self.M[keep], self.APc[keep])
        if self.eq is not None:
            self.eq = self.eq.take(keep)

    def factor(self, D: FloatArray, x: FloatArray, y: FloatArray, Ax: FloatArray,
               r_d: FloatArray) -> None:
        """Factorise for this iteration's D at (x, y) (r_d = Px + c + Aᵀy, Ax = A x)."""
        if self.eq is None:
            S, at = self.M.copy(), self.zero + self.diagonal
        else:  # the equalities eliminated: C + D
            S, at = self.eq.C.copy(), self.diagonal
        S[:, at, at] += D
        self.S = Stack(S, definite=True)
        self.x, self.y = x, y  # P⁻¹ r_d = x + P⁻¹c + P⁻¹Aᵀy, formed in solve with dy
        self.g = Ax + self.APc + mv(self.M, y)  # A P⁻¹ r_d

    def active_set_point(self, keep: npt.NDArray[np.intp], data: DenseBatch,
                         active: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
        """(x, y) solving the KKT system with rows ``active`` (every equality, the active
        inequalities) as equalities and the other multipliers 0: A_act P⁻¹ A_actᵀ y_act =
        −(b + A P⁻¹ c)_act, x = −P⁻¹(c + Aᵀ y), for the elements ``keep``."""
        # the active rows gathered first, padded to the largest count with identity rows:
        # of order k (qp200: ~70) where masking the inactive ones kept order m (150)
        count = active.sum(axis=1)
        k = int(count.max(initial=0))
        order = np.argsort(~active, axis=1, kind="stable")[:, :k]
        pad = np.arange(k)[None, :] >= count[:, None]
        e = np.arange(keep.size)[:, None]
        S = self.M[keep[:, None, None], order[:, :, None], order[:, None, :]]
        S[pad[:, :, None] | pad[:, None, :]] = 0.0
        rhs = -(rows(data.b, keep) + take_elements(self.APc, keep))[e, order]
        rhs[pad] = 0.0
        y_act = regularised_solve(S, rhs, pad.astype(float), (~pad).astype(float),
                                  definite=True)
        y = np.zeros(active.shape)
        y[e, order] = np.where(pad, 0.0, y_act)
        x = -(take_elements(self.Pinv_c, keep) + mv(take_elements(self.PinvAT, keep), y))
        return x, y

    def solve(self, r_e: FloatArray, rho: FloatArray, D: FloatArray, primal: bool = True
              ) -> tuple[FloatArray | None, FloatArray]:
        """(dx, dy); dx None without ``primal`` (the predictor needs dy alone: one product
        with P⁻¹Aᵀ, the largest stack the iteration reads, fewer)."""
        z = self.zero
        rhs_e, rhs_i = r_e - self.g[:, :z], -rho - self.g[:, z:]
        if self.eq is None:
            dy = self.S.solve(np.concatenate([rhs_e, rhs_i], axis=1))
        else:
            dy = self.eq.solve(self.S, rhs_e, rhs_i)
        if not primal:
            return None, dy
        dx = -(self.x + self.Pinv_c + mv(self.PinvAT, self.y + dy))  # −P⁻¹(r_d + Aᵀdy)
        return dx, dy


class Equalities:
    """The equality rows of A P⁻¹ Aᵀ + diag(0, D) eliminated once for every iteration: with
    M = [[M_ee, M_ei], [M_ie, M_ii]] (M_ee positive definite: A_eq of full row rank),
    the Newton system's (dy_e, dy_i) solve M_ee t = rhs_e, (C + D) dy_i = rhs_i − M_ie t,
    dy_e = t − K dy_i with K = M_ee⁻¹ M_ei and C = M_ii − M_ie K formed here. Each iteration
    then factorises C + D, of the inequality count, instead of the whole M + diag(0, D):
    the block Cholesky of the latter, its first block done once (qp200: order 100
    against 150, 0.3× the flops of the per-iteration factorisation)."""

    def __init__(self, Minv: FloatArray, K: FloatArray, M_ie: FloatArray,
                 C: FloatArray) -> None:
        self.Minv, self.K, self.M_ie, self.C = Minv, K, M_ie, C

    @staticmethod
    def of(M: FloatArray, z: int) -> Equalities | None:
        """The elimination, or None where there are no equality rows or some M_ee is not
        positive definite (dependent equality rows: the whole system then, as before)."""
        if z == 0 or z == M.shape[1]:
            return None
        M_ee, M_ei, M_ie = M[:, :z, :z], M[:, :z, z:], M[:, z:, :z]
        if z < LOOP_MIN_ORDER:
            rhs = np.concatenate([np.broadcast_to(np.eye(z), M_ee.shape), M_ei], axis=2)
            try:
                np.linalg.cholesky(M_ee)
            except np.linalg.LinAlgError:
                return None
            X = np.linalg.solve(M_ee, rhs)
        else:  # LAPACK per element, as Stack, in place on [I M_ei]ᵀ = [I; M_ie] (M symmetric)
            factors = M_ee.copy()
            if not _lapack.potrf(factors).all():
                return None
            rhs_t = np.concatenate([np.broadcast_to(np.eye(z), M_ee.shape), M_ie], axis=1)
            X = _lapack.potrs(factors, rhs_t).transpose(0, 2, 1)
        Minv, K = X[:, :, :z], X[:, :, z:]
        return Equalities(Minv, K, M_ie, M[:, z:, z:] - M_ie @ K)

    def take(self, keep: npt.NDArray[np.intp]) -> Equalities:
        return Equalities(self.Minv[keep], self.K[keep], self.M_ie[keep], self.C[keep])

    def solve(self, S: Stack, rhs_e: FloatArray, rhs_i: FloatArray) -> FloatArray:
        """[dy_e, dy_i] for the Newton system's right-hand side, S the factorised C + D."""
        t = mv(self.Minv, rhs_e)
        dy_i = S.solve(rhs_i - mv(self.M_ie, t))
        return np.concatenate([t - mv(self.K, dy_i), dy_i], axis=1)


class Augmented:
    """Any P: [[P + A_inᵀ D⁻¹ A_in, A_eqᵀ], [A_eq, 0]] [dx; dy_eq] = rhs, of order n + zero."""

    def __init__(self, data: DenseBatch) -> None:
        self.data = data
        self.zero = data.zero

    def take(self, keep: npt.NDArray[np.intp]) -> None:
        self.data = self.data.take(keep)

    def factor(self, D: FloatArray, x: FloatArray, y: FloatArray, Ax: FloatArray,
               r_d: FloatArray) -> None:
        d, z = self.data, self.zero
        A_in = d.A[:, z:]
        n = d.A.shape[2]
        B = D.shape[0]
        K = np.zeros((B, n + z, n + z))
        K[:, :n, :n] = (A_in.transpose(0, 2, 1) / D[:, None, :]) @ A_in
        if d.P is not None:
            K[:, :n, :n] += d.P
        K[:, :n, n:] = d.A[:, :z].transpose(0, 2, 1)
        K[:, n:, :n] = d.A[:, :z]
        self.K = Stack(K, definite=False)
        self.r_d = r_d

    def active_set_point(self, keep: npt.NDArray[np.intp], data: DenseBatch,
                         active: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
        """As :meth:`Schur.active_set_point`, on the whole KKT system [[P, A_actᵀ],
        [A_act, 0]] (of order n + m; an inactive row's equation is y_i = 0)."""
        n, m = data.A.shape[2], data.A.shape[1]
        mask = active.astype(float)
        A = rows(data.A, keep) * mask[:, :, None]
        K = np.zeros((keep.size, n + m, n + m))
        if data.P is not None:
            K[:, :n, :n] = rows(data.P, keep)
        K[:, :n, n:] = A.transpose(0, 2, 1)
        K[:, n:, :n] = A
        c = np.broadcast_to(rows(data.c, keep), (keep.size, n))  # c, b may be shared
        rhs = np.concatenate([-c, rows(data.b, keep) * mask], axis=1)
        free = np.concatenate([np.zeros((keep.size, n)), 1.0 - mask], axis=1)
        reg = np.concatenate([np.ones((keep.size, n)), -mask], axis=1)  # quasi-definite
        sol = regularised_solve(K, rhs, free, reg)
        return sol[:, :n], sol[:, n:]

    def solve(self, r_e: FloatArray, rho: FloatArray, D: FloatArray, primal: bool = True
              ) -> tuple[FloatArray, FloatArray]:
        """(dx, dy) (dx comes with dy here, whatever ``primal`` asks)."""
        d, z = self.data, self.zero
        n = self.r_d.shape[1]
        top = -self.r_d + mtv(d.A[:, z:], rho / D)
        sol = self.K.solve(np.concatenate([top, -r_e], axis=1))
        dx = sol[:, :n]
        dy_in = (mv(d.A[:, z:], dx) - rho) / D
        return dx, np.concatenate([sol[:, n:], dy_in], axis=1)


def choose_system(data: DenseBatch) -> Schur | Augmented:
    """Schur where P is positive definite for every element (its Cholesky succeeds) and
    there are fewer constraint rows than n + zero; else Augmented."""
    n, m = data.A.shape[2], data.A.shape[1]
    if data.P is not None and m < n + data.zero:
        setup = Schur.setup(data)
        if setup is not None:
            return Schur(data, *setup)
    return Augmented(data)


def rows(a: FloatArray, keep: npt.NDArray[np.intp]) -> FloatArray:
    """Elements ``keep`` of a stack that may be shared (leading 1)."""
    return a if a.shape[0] == 1 else take_elements(a, keep)


def regularised_solve(K: FloatArray, rhs: FloatArray, free: FloatArray,
                       reg: FloatArray, definite: bool = False) -> FloatArray:
    """Solve K v = rhs where rows with ``free`` = 1 are zero in K and read v_i = 0, and K
    may be singular on the rest (duplicated active rows): factorise K + diag(free) +
    diag(reg) · 1e-12 · max|K| and refine once against K itself (a step of the iteration
    that converges to a solution of a consistent singular system; the polished point's
    residuals are checked after). ``definite``: K is positive semidefinite and ``reg`` > 0
    on its rows, so the regularised matrix is definite (Cholesky)."""
    idx = np.arange(K.shape[1])
    Kfull = K.copy()
    Kfull[:, idx, idx] += free
    Kr = Kfull.copy()
    Kr[:, idx, idx] += 1e-12 * np.abs(K).max(axis=(1, 2), initial=1.0)[:, None] * reg
    stack = Stack(Kr, definite=definite)
    v = stack.solve(rhs)
    return v + stack.solve(rhs - mv(Kfull, v))
