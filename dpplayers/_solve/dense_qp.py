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

solved by one of two eliminations (:mod:`.qp_systems`: ``Schur`` where every P of the
batch is positive definite and the constraint count is the smaller, its equality rows
eliminated once for every iteration, else ``Augmented``). ``Schur``'s factors of the data
(P's, P⁻¹Aᵀ, A P⁻¹ Aᵀ) are returned for the derivative (:mod:`dpplayers._derivative.qp_elements`).
From a relative measure of POLISH_FROM on, each element's active set (rows with y > s) is
tried: the exact solution there, where feasible, is its answer (:func:`polish`). Otherwise
an element stops once its relative primal and dual residuals and its complementarity are
all below ``TOLERANCE``; one that does not get there (infeasible, unbounded, stalled,
singular) is returned unconverged for the caller to solve on the conic solver, which
reports its status.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .qp_systems import (
    Augmented,
    DenseBatch,
    KeptFactors,
    Schur,
    choose_system,
    mtv,
    mv,
    rows,
)

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
#: From this worst relative measure on, each iteration tries the active-set polish
#: (see polish): where it succeeds the element is done, exact, some iterations early.
POLISH_FROM = 1e-6
#: A polished point may violate s >= 0 and y >= 0 by this much (relative to the data
#: scale): rounding on a weakly active row. Such entries are set to 0.
POLISH_SLACK = 1e-9
#: Fraction of the step to the boundary of the non-negative orthant taken.
STEP_FRACTION = 0.99


@dataclass(frozen=True)
class Result:
    """Per element: converged flag, x (B, n), y (B, m), s (B, m), iterations; and the
    data's factorisations the Schur elimination formed (None with the augmented system),
    for the derivative."""

    converged: npt.NDArray[np.bool_]
    x: FloatArray
    y: FloatArray
    s: FloatArray
    iterations: npt.NDArray[np.int64]
    seconds: float
    factors: KeptFactors | None = None


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
    kept = system.kept if isinstance(system, Schur) else None
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
        Ax = mv(cur.A, x)
        r_d = mtv(cur.A, y) + cc
        Px = mv(cur.P, x) if cur.P is not None else np.zeros_like(x)
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
        _, dy = system.solve(r_e, rho, D, primal=False)  # its step reads dy and ds alone
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
    return Result(converged, out_x, out_y, out_s, iterations, time.perf_counter() - start,
                  kept)


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
    A, b, c = rows(data.A, keep), rows(data.b, keep), rows(data.c, keep)
    Ax = mv(A, px)
    ps = (b - Ax)[:, z:]
    ps[active[:, z:]] = 0.0
    bs, cs = b_scale[keep], c_scale[keep]
    r_d = mtv(A, py) + c + (mv(rows(data.P, keep), px) if data.P is not None else 0.0)
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


def _max_step(v: FloatArray, dv: FloatArray) -> FloatArray:
    """Per row, the largest α with v + α dv ≥ 0 (inf if dv ≥ 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dv < 0, -v / dv, np.inf)
    return ratio.min(axis=1, initial=np.inf)
