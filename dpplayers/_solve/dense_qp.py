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

from ..cones import ConeDims

FloatArray = npt.NDArray[np.float64]

#: Relative primal residual, dual residual and complementarity an element must reach
#: (each scaled by 1 + the size of the data it compares with). The conic solvers stop at
#: 1e-8; the derivative needs the point to ~1e-10 for gradients exact to 1e-8.
TOLERANCE = 1e-13
#: An element still above TOLERANCE after this many iterations, or whose iterates grow
#: past DIVERGENCE × (1 + data scale) (an infeasible or unbounded element), is given up.
MAX_ITERATIONS = 50
DIVERGENCE = 1e10
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


class Schur:
    """P positive definite: dx = −P⁻¹(r_d + Aᵀ dy), and (A P⁻¹ Aᵀ + diag(0, D)) dy = rhs,
    of the order of the constraint count. P⁻¹Aᵀ, P⁻¹c and A P⁻¹ Aᵀ are formed once."""

    def __init__(self, data: DenseBatch) -> None:
        n = data.A.shape[2]
        rhs = np.concatenate([np.broadcast_to(data.A.transpose(0, 2, 1), (data.size, n, data.A.shape[1])),
                              np.broadcast_to(data.c[:, :, None], (data.size, n, 1))], axis=2)
        solved = np.linalg.solve(data.P, rhs) if data.P.shape[0] == data.size else \
            np.linalg.solve(data.P[0], rhs)
        self.PinvAT, self.Pinv_c = solved[:, :, :-1], solved[:, :, -1]
        self.M = data.A @ self.PinvAT
        self.APc = _mv(data.A, self.Pinv_c)
        self.zero = data.zero
        self.A = data.A

    def take(self, keep: npt.NDArray[np.intp]) -> None:
        self.PinvAT, self.Pinv_c, self.M, self.APc = (
            self.PinvAT[keep], self.Pinv_c[keep], self.M[keep], self.APc[keep])
        if self.A.shape[0] > 1:
            self.A = self.A[keep]

    def factor(self, D: FloatArray) -> FloatArray:
        S = self.M.copy()
        idx = np.arange(self.zero, S.shape[1])
        S[:, idx, idx] += D
        return S

    def solve(self, S: FloatArray, x: FloatArray, y: FloatArray, r_e: FloatArray,
              rho: FloatArray, D: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The step (dx, dy) for the current residual r_d = Px + c + Aᵀy."""
        z = self.zero
        Pinv_rd = x + self.Pinv_c + _mv(self.PinvAT, y)
        g = _mv(self.A, x) + self.APc + _mv(self.M, y)
        rhs = np.concatenate([r_e - g[:, :z], -rho - g[:, z:]], axis=1)
        dy = np.linalg.solve(S, rhs[..., None])[..., 0]
        dx = -(Pinv_rd + _mv(self.PinvAT, dy))
        return dx, dy


class Augmented:
    """Any P: [[P + A_inᵀ D⁻¹ A_in, A_eqᵀ], [A_eq, 0]] [dx; dy_eq] = rhs, of order n + zero."""

    def __init__(self, data: DenseBatch) -> None:
        self.data = data
        self.zero = data.zero

    def take(self, keep: npt.NDArray[np.intp]) -> None:
        self.data = self.data.take(keep)

    def factor(self, D: FloatArray) -> FloatArray:
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
        return K

    def solve(self, K: FloatArray, x: FloatArray, y: FloatArray, r_e: FloatArray,
              rho: FloatArray, D: FloatArray) -> tuple[FloatArray, FloatArray]:
        d, z = self.data, self.zero
        n = x.shape[1]
        r_d = _mtv(d.A, y) + d.c
        if d.P is not None:
            r_d = r_d + _mv(d.P, x)
        top = -r_d + _mtv(d.A[:, z:], rho / D)
        sol = np.linalg.solve(K, np.concatenate([top, -r_e], axis=1)[..., None])[..., 0]
        dx = sol[:, :n]
        dy_in = (_mv(d.A[:, z:], dx) - rho) / D
        return dx, np.concatenate([sol[:, n:], dy_in], axis=1)


def choose_system(data: DenseBatch) -> Schur | Augmented:
    """Schur where P is positive definite for every element (a batched Cholesky succeeds)
    and there are fewer constraint rows than n + zero; else Augmented."""
    n, m = data.A.shape[2], data.A.shape[1]
    if data.P is not None and m < n + data.zero:
        try:
            np.linalg.cholesky(data.P)
        except np.linalg.LinAlgError:
            return Augmented(data)
        return Schur(data)
    return Augmented(data)


def solve_batch(data: DenseBatch) -> Result:
    """Mehrotra predictor-corrector on every element of ``data`` (see the module text)."""
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
    x0, y0 = np.zeros((B, n)), np.zeros((B, m))
    K = system.factor(ones)
    x, dy = system.solve(K, x0, y0, -b[:, :z], b[:, z:], ones)
    y = dy.copy()
    s = -dy[:, z:]
    y_in = dy[:, z:].copy()
    for v in (s, y_in):
        low = v.min(axis=1, initial=1.0)
        v += np.where(low < 0, 1.0 - low, 0.0)[:, None]
    y[:, z:] = y_in
    alive = np.arange(B)  # elements still iterating, by their place in the batch
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
        done = (pres <= TOLERANCE) & (dres <= TOLERANCE) & (gap <= TOLERANCE)
        scale = np.maximum(bs, cs)
        blown = ~np.isfinite(sy) | (np.abs(x).max(axis=1, initial=0.0) > DIVERGENCE * scale) | \
            (np.abs(y).max(axis=1, initial=0.0) > DIVERGENCE * scale)
        finished = done | blown | (it == MAX_ITERATIONS)
        if finished.any():
            where = alive[finished]
            out_x[where], out_y[where] = x[finished], y[finished]
            out_s[where, z:] = s[finished]
            converged[where] = done[finished] & ~blown[finished]
            iterations[where] = it
            keep = np.flatnonzero(~finished)
            if keep.size == 0:
                break
            alive = alive[keep]
            x, y, s = x[keep], y[keep], s[keep]
            r_e, r_i = r_e[keep], r_i[keep]
            cur = cur.take(keep)
            system.take(keep)
            bb, cc, bs, cs = (v if v.shape[0] == 1 else v[keep] for v in (bb, cc, bs, cs))
            if bb.shape[0] != keep.size:
                bb = np.broadcast_to(bb, (keep.size, m))
            if cc.shape[0] != keep.size:
                cc = np.broadcast_to(cc, (keep.size, n))
            sy = sy[keep]
        y_in = y[:, z:]
        mu = sy / max(l, 1)
        D = s / y_in
        K = system.factor(D)
        # predictor (affine scaling)
        r_c = s * y_in
        rho = -r_i + r_c / y_in
        dx, dy = system.solve(K, x, y, r_e, rho, D)
        ds = -(r_c + s * dy[:, z:]) / y_in
        alpha = np.minimum(1.0, np.minimum(_max_step(s, ds), _max_step(y_in, dy[:, z:])))
        mu_aff = np.einsum("bi,bi->b", s + alpha[:, None] * ds,
                           y_in + alpha[:, None] * dy[:, z:]) / max(l, 1)
        sigma = np.clip((mu_aff / np.maximum(mu, 1e-300)) ** 3, 0.0, 1.0)
        # corrector
        r_c = s * y_in + ds * dy[:, z:] - (sigma * mu)[:, None]
        rho = -r_i + r_c / y_in
        dx, dy = system.solve(K, x, y, r_e, rho, D)
        ds = -(r_c + s * dy[:, z:]) / y_in
        alpha = np.minimum(1.0, STEP_FRACTION * np.minimum(_max_step(s, ds),
                                                           _max_step(y_in, dy[:, z:])))
        x = x + alpha[:, None] * dx
        y = y + alpha[:, None] * dy
        s = s + alpha[:, None] * ds
    return Result(converged, out_x, out_y, out_s, iterations, time.perf_counter() - start)


def _max_step(v: FloatArray, dv: FloatArray) -> FloatArray:
    """Per row, the largest α with v + α dv ≥ 0 (inf if dv ≥ 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dv < 0, -v / dv, np.inf)
    return ratio.min(axis=1, initial=np.inf)
