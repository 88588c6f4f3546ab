"""A batched dense interior-point method for small QPs and LPs: every element at once.

For programs whose cones are zero and non-negative only (``min ½xᵀPx + cᵀx`` s.t.
``A_eq x = b_eq``, ``A_in x + s = b_in``, ``s ≥ 0``; rows in SCS order, equalities
first), a batch is solved by Mehrotra's predictor-corrector primal-dual method on stacked
dense arrays: each iteration is a handful of batched matmuls and one batched LAPACK solve
per direction for all unfinished elements, where the conic path runs a solver per element.
The answer is the canonical (x, y, s), so the derivative is the conic path's.

Newton system at (x, y, s), with W = diag(s_in / y_in) (``D`` below)::

    P dx + Aᵀ dy = −r_d,    A_eq dx = −r_e,    A_in dx − D dy_in = ρ,
    ρ = −r_i + r_c / y_in,  ds = −(r_c + s ∘ dy_in) / y_in,

solved by one of two eliminations (:class:`Schur` where every P of the batch is positive
definite and the constraint count is the smaller, else :class:`Augmented`). An element
stops once its relative primal and dual residuals and its complementarity are all below
``TOLERANCE``; one that does not get there (infeasible, unbounded, stalled, singular) is
returned as None for the caller to solve on the conic solver, which reports its status.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.linalg import lapack

from ..cones import ConeDims

FloatArray = npt.NDArray[np.float64]

#: Relative primal residual, dual residual and complementarity an element must reach
#: (each scaled by 1 + the size of the data it compares with). The conic solvers stop at
#: 1e-8; the derivative needs the point to ~1e-10 for gradients exact to 1e-8.
TOLERANCE = 1e-13
#: An element below STALLED_TOLERANCE whose worst measure has not halved in
#: STALL_ITERATIONS iterations has reached the rounding floor of its linear algebra (1e-12
#: to 1e-11 on some LPs and singular-P QPs): it stops there, solved.
STALL_ITERATIONS = 3
STALLED_TOLERANCE = 1e-10
#: An element still above TOLERANCE after this many iterations, or whose iterates grow
#: past DIVERGENCE × (1 + data scale) (an infeasible or unbounded element), is given up.
MAX_ITERATIONS = 50
DIVERGENCE = 1e10
#: Systems of at least this order are factorised per element by LAPACK (one factorisation
#: serves both solves of an iteration, Cholesky where definite); smaller ones by numpy's
#: batched solve, twice. Measured, one thread, minimum of 15: (32, 150, 150) Cholesky and
#: two solves per element 4.8 ms against numpy's two batched solves 14.5 ms; at order 35
#: numpy's batched call wins (128 systems: 2 × 1.0 ms against ~2 ms of per-call overhead).
LOOP_MIN_ORDER = 64
#: From this worst relative measure on, each iteration tries the active-set polish
#: (see polish): where it succeeds the element is done, exact, some iterations early.
POLISH_FROM = 1e-6
#: A polished point may violate s >= 0 and y >= 0 by this much (relative to the data
#: scale): rounding on a weakly active row. Such entries are set to 0.
POLISH_SLACK = 1e-9
#: Fraction of the step to the boundary of the non-negative orthant taken.
STEP_FRACTION = 0.99


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


@dataclass(frozen=True)
class Result:
    """Per element: converged flag, x (B, n), y (B, m), s (B, m), iterations."""

    converged: npt.NDArray[np.bool_]
    x: FloatArray
    y: FloatArray
    s: FloatArray
    iterations: npt.NDArray[np.int64]
    seconds: float


def _mv(M: FloatArray, v: FloatArray) -> FloatArray:
    """Batched matrix–vector product (M (B or 1, p, q), v (B, q)) → (B, p)."""
    return (M @ v[..., None])[..., 0]


def _mtv(M: FloatArray, v: FloatArray) -> FloatArray:
    """Batched Mᵀv."""
    return (v[:, None, :] @ M)[:, 0, :]


class Stack:
    """Solves with a stack of matrices K (B, q, q), each factorised once for the two solves
    of an iteration: numpy's batched solve below LOOP_MIN_ORDER (one call for the batch;
    it refactorises per call, which is cheap there), else LAPACK per element (Cholesky
    where K is positive definite, LU otherwise). An element whose factorisation fails
    gets NaN (its iterates are then given up)."""

    def __init__(self, K: FloatArray, definite: bool) -> None:
        self.K, self.definite = K, definite
        self.loop = K.shape[1] >= LOOP_MIN_ORDER
        if self.loop:
            self.factors = [self._factor(Kk) for Kk in K]

    def _factor(self, Kk: FloatArray) -> tuple | None:
        if self.definite:
            c, info = lapack.dpotrf(Kk, lower=1, clean=0)
            return (c,) if info == 0 else None
        lu, piv, info = lapack.dgetrf(Kk)
        return (lu, piv) if info == 0 else None

    def solve(self, rhs: FloatArray) -> FloatArray:
        """K⁻¹ rhs for rhs (B, q)."""
        if not self.loop:
            try:
                return np.linalg.solve(self.K, rhs[..., None])[..., 0]
            except np.linalg.LinAlgError:  # some K is singular: NaN for those alone
                return np.stack([_solve_or_nan(Kk, r) for Kk, r in zip(self.K, rhs)])
        out = np.empty_like(rhs)
        for k, f in enumerate(self.factors):
            if f is None:
                out[k] = np.nan
            elif self.definite:
                out[k] = lapack.dpotrs(f[0], rhs[k], lower=1)[0]
            else:
                out[k] = lapack.dgetrs(f[0], f[1], rhs[k])[0]
        return out


def _solve_or_nan(K: FloatArray, rhs: FloatArray) -> FloatArray:
    try:
        return np.linalg.solve(K, rhs)
    except np.linalg.LinAlgError:
        return np.full_like(rhs, np.nan)


class Schur:
    """P positive definite: dx = −P⁻¹(r_d + Aᵀ dy), and (A P⁻¹ Aᵀ + diag(0, D)) dy = rhs,
    of the order of the constraint count. P⁻¹Aᵀ, P⁻¹c and A P⁻¹ Aᵀ are formed once."""

    def __init__(self, data: DenseBatch, PinvATc: FloatArray) -> None:
        self.PinvAT, self.Pinv_c = PinvATc[:, :, :-1], PinvATc[:, :, -1]
        self.M = data.A @ self.PinvAT
        self.APc = _mv(data.A, self.Pinv_c)
        self.zero = data.zero
        self.diagonal = np.arange(self.zero, data.A.shape[1])

    @staticmethod
    def setup(data: DenseBatch) -> FloatArray | None:
        """[P⁻¹Aᵀ, P⁻¹c] per element (B, n, m + 1), or None where some P is not positive
        definite."""
        n, m = data.A.shape[2], data.A.shape[1]
        rhs = np.concatenate([np.broadcast_to(data.A.transpose(0, 2, 1), (data.size, n, m)),
                              np.broadcast_to(data.c[:, :, None], (data.size, n, 1))], axis=2)
        P = np.broadcast_to(data.P, (data.size, n, n))
        if n < LOOP_MIN_ORDER:  # numpy's batched calls (one Cholesky to check definiteness)
            try:
                np.linalg.cholesky(P)
            except np.linalg.LinAlgError:
                return None
            return np.linalg.solve(P, rhs)
        out = np.empty_like(rhs)
        for k in range(data.size):
            c, info = lapack.dpotrf(P[k], lower=1, clean=0)
            if info != 0:
                return None
            out[k] = lapack.dpotrs(c, rhs[k], lower=1)[0]
        return out

    def take(self, keep: npt.NDArray[np.intp]) -> None:
        self.PinvAT, self.Pinv_c, self.M, self.APc = (
            self.PinvAT[keep], self.Pinv_c[keep], self.M[keep], self.APc[keep])

    def factor(self, D: FloatArray, x: FloatArray, y: FloatArray, Ax: FloatArray,
               r_d: FloatArray) -> None:
        """Factorise for this iteration's D at (x, y) (r_d = Px + c + Aᵀy, Ax = A x)."""
        S = self.M.copy()
        S[:, self.diagonal, self.diagonal] += D
        self.S = Stack(S, definite=True)
        self.Pinv_rd = x + self.Pinv_c + _mv(self.PinvAT, y)  # P⁻¹ r_d
        self.g = Ax + self.APc + _mv(self.M, y)  # A P⁻¹ r_d

    def active_set_point(self, keep: npt.NDArray[np.intp], data: DenseBatch,
                         active: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
        """(x, y) solving the KKT system with rows ``active`` (every equality, the active
        inequalities) as equalities and the other multipliers 0: A_act P⁻¹ A_actᵀ y_act =
        −(b + A P⁻¹ c)_act, x = −P⁻¹(c + Aᵀ y), for the elements ``keep``."""
        mask = active.astype(float)
        S = self.M[keep] * mask[:, :, None] * mask[:, None, :]
        rhs = -(_rows(data.b, keep) + self.APc[keep]) * mask
        y = _regularised_solve(S, rhs, 1.0 - mask, mask, definite=True)
        x = -(self.Pinv_c[keep] + _mv(self.PinvAT[keep], y))
        return x, y

    def solve(self, r_e: FloatArray, rho: FloatArray, D: FloatArray
              ) -> tuple[FloatArray, FloatArray]:
        z = self.zero
        rhs = np.concatenate([r_e - self.g[:, :z], -rho - self.g[:, z:]], axis=1)
        dy = self.S.solve(rhs)
        dx = -(self.Pinv_rd + _mv(self.PinvAT, dy))
        return dx, dy


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
        A = _rows(data.A, keep) * mask[:, :, None]
        K = np.zeros((keep.size, n + m, n + m))
        if data.P is not None:
            K[:, :n, :n] = _rows(data.P, keep)
        K[:, :n, n:] = A.transpose(0, 2, 1)
        K[:, n:, :n] = A
        c = np.broadcast_to(_rows(data.c, keep), (keep.size, n))  # c, b may be shared
        rhs = np.concatenate([-c, _rows(data.b, keep) * mask], axis=1)
        free = np.concatenate([np.zeros((keep.size, n)), 1.0 - mask], axis=1)
        reg = np.concatenate([np.ones((keep.size, n)), -mask], axis=1)  # quasi-definite
        sol = _regularised_solve(K, rhs, free, reg)
        return sol[:, :n], sol[:, n:]

    def solve(self, r_e: FloatArray, rho: FloatArray, D: FloatArray
              ) -> tuple[FloatArray, FloatArray]:
        d, z = self.data, self.zero
        n = self.r_d.shape[1]
        top = -self.r_d + _mtv(d.A[:, z:], rho / D)
        sol = self.K.solve(np.concatenate([top, -r_e], axis=1))
        dx = sol[:, :n]
        dy_in = (_mv(d.A[:, z:], dx) - rho) / D
        return dx, np.concatenate([sol[:, n:], dy_in], axis=1)


def choose_system(data: DenseBatch) -> Schur | Augmented:
    """Schur where P is positive definite for every element (its Cholesky succeeds) and
    there are fewer constraint rows than n + zero; else Augmented."""
    n, m = data.A.shape[2], data.A.shape[1]
    if data.P is not None and m < n + data.zero:
        PinvATc = Schur.setup(data)
        if PinvATc is not None:
            return Schur(data, PinvATc)
    return Augmented(data)


def solve_batch(data: DenseBatch) -> Result:
    """Mehrotra predictor-corrector on every element of ``data`` (see the module text).
    An element that meets a singular system or diverges carries NaN or inf until it is
    given up; numpy's warnings about it are silenced (it is reported by ``converged``)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _mehrotra(data)


def _mehrotra(data: DenseBatch) -> Result:
    start = time.perf_counter()
    B, m, n = data.size, data.A.shape[1], data.A.shape[2]
    z = data.zero
    l = m - z
    b = np.broadcast_to(data.b, (B, m))
    c = np.broadcast_to(data.c, (B, n))
    out_x, out_y, out_s = np.zeros((B, n)), np.zeros((B, m)), np.zeros((B, m))
    converged = np.zeros(B, bool)
    iterations = np.zeros(B, np.int64)
    system = choose_system(data)
    # scales for the relative criteria
    b_scale = 1.0 + np.abs(b).max(axis=1, initial=0.0)
    c_scale = 1.0 + np.abs(c).max(axis=1, initial=0.0)
    # the starting point: the Newton system at 0 with D = I, shifted into the orthant
    ones = np.ones((B, l))
    zeros = np.zeros((B, n))
    system.factor(ones, zeros, np.zeros((B, m)), np.zeros((B, m)), c.copy())
    x, dy = system.solve(-b[:, :z], b[:, z:], ones)
    y = dy.copy()
    s = -dy[:, z:]
    y_in = dy[:, z:].copy()
    for v in (s, y_in):
        low = v.min(axis=1, initial=1.0)
        v += np.where(low < 0, 1.0 - low, 0.0)[:, None]
    y[:, z:] = y_in
    alive = np.arange(B)  # elements still iterating, by their place in the batch
    recorded = np.zeros(B, bool)  # ... of which already answered (dropped at the next compression)
    best = np.full(B, np.inf)  # each element's smallest worst measure so far
    stalls = np.zeros(B, np.int64)  # iterations since it last halved
    polish_at = np.full(B, POLISH_FROM)  # the worst measure at which to try the polish
    cur = data
    bb, cc, bs, cs = b, c, b_scale, c_scale
    for it in range(MAX_ITERATIONS + 1):
        Ax = _mv(cur.A, x)
        r_d = _mtv(cur.A, y) + cc
        Px = _mv(cur.P, x) if cur.P is not None else np.zeros_like(x)
        r_d += Px
        r_e = Ax[:, :z] - bb[:, :z]
        r_i = Ax[:, z:] + s - bb[:, z:]
        sy = np.einsum("bi,bi->b", s, y[:, z:])
        pobj = np.einsum("bi,bi->b", x, 0.5 * Px + cc)
        pres = np.maximum(np.abs(r_e).max(axis=1, initial=0.0),
                          np.abs(r_i).max(axis=1, initial=0.0)) / bs
        dres = np.abs(r_d).max(axis=1, initial=0.0) / cs
        gap = sy / (1.0 + np.abs(pobj))
        worst = np.maximum(np.maximum(pres, dres), gap)
        stalls = np.where(worst > 0.5 * best, stalls + 1, 0)
        best = np.minimum(best, worst)
        stalled = (stalls >= STALL_ITERATIONS) & (worst <= STALLED_TOLERANCE)
        done = (worst <= TOLERANCE) | stalled
        scale = np.maximum(bs, cs)
        blown = ~np.isfinite(sy) | ~np.isfinite(pres) | ~np.isfinite(dres) | \
            (np.abs(x).max(axis=1, initial=0.0) > DIVERGENCE * scale) | \
            (np.abs(y).max(axis=1, initial=0.0) > DIVERGENCE * scale)
        ready = ((worst <= polish_at) | done) & ~blown & ~recorded
        polished = np.zeros_like(ready)
        if ready.any():
            fx, fy, fs, polished = polish(system, cur, ready, x, y, s, bs, cs)
            # a failed try (the active set not settled yet) is retried 10× further on
            polish_at = np.where(ready & ~polished, worst * 0.1, polish_at)
        finished = (polished | done | blown | stalled | (it == MAX_ITERATIONS)) & ~recorded
        if finished.any():
            where = alive[finished]
            if ready.any():
                out_x[where], out_y[where] = fx[finished], fy[finished]
                out_s[where, z:] = fs[finished]
            else:
                out_x[where], out_y[where] = x[finished], y[finished]
                out_s[where, z:] = s[finished]
            converged[where] = (polished | done)[finished] & ~blown[finished]
            iterations[where] = it
            recorded |= finished
        if recorded.all():
            break
        if 4 * recorded.sum() >= recorded.size:  # drop answered elements (copies: not always)
            keep = np.flatnonzero(~recorded)
            alive, recorded = alive[keep], recorded[keep]
            x, y, s, Ax, r_d = x[keep], y[keep], s[keep], Ax[keep], r_d[keep]
            r_e, r_i, sy = r_e[keep], r_i[keep], sy[keep]
            best, stalls, polish_at = best[keep], stalls[keep], polish_at[keep]
            cur = cur.take(keep)
            system.take(keep)
            bb, cc, bs, cs = bb[keep], cc[keep], bs[keep], cs[keep]
        y_in = y[:, z:]
        mu = sy / max(l, 1)
        D = s / y_in
        system.factor(D, x, y, Ax, r_d)
        # predictor (affine scaling)
        r_c = s * y_in
        rho = -r_i + r_c / y_in
        dx, dy = system.solve(r_e, rho, D)
        ds = -(r_c + s * dy[:, z:]) / y_in
        alpha = np.minimum(1.0, np.minimum(_max_step(s, ds), _max_step(y_in, dy[:, z:])))
        mu_aff = np.einsum("bi,bi->b", s + alpha[:, None] * ds,
                           y_in + alpha[:, None] * dy[:, z:]) / max(l, 1)
        sigma = np.clip((mu_aff / np.maximum(mu, 1e-300)) ** 3, 0.0, 1.0)
        # corrector
        r_c = s * y_in + ds * dy[:, z:] - (sigma * mu)[:, None]
        rho = -r_i + r_c / y_in
        dx, dy = system.solve(r_e, rho, D)
        ds = -(r_c + s * dy[:, z:]) / y_in
        alpha = np.minimum(1.0, STEP_FRACTION * np.minimum(_max_step(s, ds),
                                                           _max_step(y_in, dy[:, z:])))
        x = x + alpha[:, None] * dx
        y = y + alpha[:, None] * dy
        s = s + alpha[:, None] * ds
    return Result(converged, out_x, out_y, out_s, iterations, time.perf_counter() - start)


def polish(system: Schur | Augmented, data: DenseBatch, which: npt.NDArray[np.bool_],
           x: FloatArray, y: FloatArray, s: FloatArray, b_scale: FloatArray,
           c_scale: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray,
                                         npt.NDArray[np.bool_]]:
    """The interior point of each element ``which`` replaced by the exact solution on its
    active set (rows with y > s) where that point is primal and dual feasible to
    POLISH_SLACK and its residuals are below TOLERANCE (then True in the returned mask):
    exact to rounding with exact complementarity (s = 0 or y = 0 per row), as a conic
    solver's projection gives, where an interior point converges only as fast as μ (as
    √μ on a weakly active row). Other elements keep their point."""
    keep = np.flatnonzero(which)
    ok = np.zeros(x.shape[0], bool)
    z = data.zero
    active = np.concatenate([np.ones((keep.size, z), bool), y[keep, z:] > s[keep]], axis=1)
    px, py = system.active_set_point(keep, data, active)
    A, b, c = _rows(data.A, keep), _rows(data.b, keep), _rows(data.c, keep)
    Ax = _mv(A, px)
    ps = (b - Ax)[:, z:]
    ps[active[:, z:]] = 0.0
    bs, cs = b_scale[keep], c_scale[keep]
    r_d = _mtv(A, py) + c + (_mv(_rows(data.P, keep), px) if data.P is not None else 0.0)
    good = ((ps.min(axis=1, initial=0.0) >= -POLISH_SLACK * bs)
            & (py[:, z:].min(axis=1, initial=0.0) >= -POLISH_SLACK * cs)
            & (np.abs(r_d).max(axis=1, initial=0.0) <= TOLERANCE * cs)
            & (np.abs(Ax[:, :z] - b[:, :z]).max(axis=1, initial=0.0) <= TOLERANCE * bs))
    x, y, s = x.copy(), y.copy(), s.copy()
    take = keep[good]
    ok[take] = True
    x[take], y[take] = px[good], py[good]
    y[take, z:] = np.maximum(py[good, z:], 0.0)
    s[take] = np.maximum(ps[good], 0.0)
    return x, y, s, ok


def _rows(a: FloatArray, keep: npt.NDArray[np.intp]) -> FloatArray:
    """Elements ``keep`` of a stack that may be shared (leading 1)."""
    return a if a.shape[0] == 1 else a[keep]


def _regularised_solve(K: FloatArray, rhs: FloatArray, free: FloatArray,
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
    return v + stack.solve(rhs - _mv(Kfull, v))


def _max_step(v: FloatArray, dv: FloatArray) -> FloatArray:
    """Per row, the largest α with v + α dv ≥ 0 (inf if dv ≥ 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dv < 0, -v / dv, np.inf)
    return ratio.min(axis=1, initial=np.inf)
