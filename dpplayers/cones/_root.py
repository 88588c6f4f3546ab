"""Vectorised scalar root search: Newton's method kept inside a bracket, one root per row.

The exponential and power cones each project by finding the root of an increasing scalar
function per cone. Bisection needs 50 or more evaluations per root; Newton's method needs about
six, but alone it can leave the bracket, cycle or stall in rounding noise. `bracketed_newton`
therefore keeps a bracket and falls back on bisection, so it ends where bisection would: a
bracket [lo, hi] with f(lo) < 0 <= f(hi) (or lo = hi where f = 0) no wider than
`RTOL` (1 + |root|), computed per row, so a row's result does not depend on the other rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._layout import Array

RTOL = 1e-15  # width of the final bracket, relative to 1 + |root|
DAMP = 0.95  # a step towards the far end of the bracket covers at most this fraction of it
NEWTON_STEPS = 60  # afterwards only bisection: never slower than it by more than this
MAX_STEPS = 300  # ample: bisection alone reaches float resolution from any bracket used here
CREEP = 3  # Newton steps in a row that fail to halve before one bisection
PLAIN_STEPS = 4  # first steps without the safeguards below: most roots need about this many
NOISE = 8 * np.finfo(float).eps  # times the sum of |terms|: a function's rounding error

RootFunction = Callable[..., tuple[Array, Array]]

#: Plain Newton steps from a seed before the bracketed search takes over (a solver's answer
#: seeds the root to ~1e-8: one step reaches rounding, the next confirms it).
POLISH_STEPS = 3


def newton_polish(f: RootFunction, params: tuple[Array, ...], x: Array, lo: Array | float,
                  hi: Array | float) -> tuple[Array, Array]:
    """POLISH_STEPS plain Newton steps of ``f`` (as `bracketed_newton` takes it) from a seed
    x near the roots: x, and the rows where f(x) is within its rounding error of 0 (f
    returns 0 there) strictly inside (lo, hi) — a root by the test that ends
    `bracketed_newton` there, at a third of its evaluations (the exponential cones of the
    sigmoid workload: 2 against 5 or more); the other rows are left to that search."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for step in range(POLISH_STEPS + 1):
            value, newton = f(x, *params)
            root = value == 0
            if step == POLISH_STEPS or root.all():
                break
            x = np.where(root, x, x + newton)
    return x, root & np.isfinite(x) & (x > lo) & (x < hi)


def bracketed_newton(f: RootFunction, params: tuple[Array, ...], lo: Array, hi: Array,
                     x: Array) -> tuple[Array, Array]:
    """Brackets, row by row, the root of functions increasing near their roots.

    ``f(x, *params)`` returns f(x) and the Newton step at x (-f/f' in the variable searched,
    or a better-scaled equivalent); it may return f = 0 where f is within its rounding error
    (`NOISE`) of 0, which ends that row's search there. ``params`` are arrays with one entry
    per row, and f(lo) < 0 <= f(hi) is assumed without being evaluated. Each step evaluates f
    at x, which then becomes one end of the bracket, and moves by Newton's step towards the
    other end. The first `PLAIN_STEPS` steps only keep x inside the bracket (at most 95% of
    the way to the other end), which is all most rows need and costs a small part of a
    safeguarded step; the following steps add these safeguards:

    * a step reaching the outer 5% of the bracket, or beyond it, is cut to 95% of the way
      (functions with a linear asymptote aim Newton at the far end from afar); two such cuts in
      a row towards the same end move to within a nudge of it (the root hugs that end), a cut
      back the other way bisects (a cycle);
    * once Newton's step is within 8 tolerances, it is taken (lengthened to half a tolerance if
      shorter), and the next steps, from whichever end was evaluated last, are half a tolerance
      and then four times the previous one, up to half the bracket: Newton's steps are rounding
      noise there, and this closes the bracket around the root in a few steps where bisecting it
      from a far end would take dozens;
    * a step against the direction of the root (f decreasing, or NaN) bisects, and so does a
      step after `CREEP` Newton steps in a row that failed to halve (Newton converging slowly,
      or wandering in rounding noise), and every step after `NEWTON_STEPS`. Bisection splits
      the bracket at the midpoint of asinh, geometrically when it spans orders of magnitude.

    Rows leave the computation as soon as they are done, so each row's sequence of points is
    the one it would follow alone.

    Returns:
        (lo, hi) per row, hi - lo <= RTOL (1 + |x|) for x, the end evaluated last.
    """
    lo, hi, x = lo.copy(), hi.copy(), x.copy()
    out_lo, out_hi = lo.copy(), hi.copy()
    rows = np.arange(lo.size)
    zero = np.zeros_like(lo)
    capped = zero  # > 0 / < 0: the last step was cut, going up / down
    nudge = zero  # > 0: the length of the next step, once Newton has converged
    last = np.full_like(lo, np.inf)  # length of the last step
    creep = zero  # Newton steps in a row longer than half the one before
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for _ in range(PLAIN_STEPS):  # cheap: no safeguard but the 95% damping into the bracket
            fx, newton = f(x, *params)
            below = fx < 0
            lo, hi = np.where(below | (fx == 0), x, lo), np.where(below, hi, x)
            x = np.fmin(np.fmax(x + newton, lo + (1 - DAMP) * (x - lo)),
                        hi - (1 - DAMP) * (hi - x))  # fmin, fmax: a NaN step stays at x
        for step in range(1, MAX_STEPS + 1):
            fx, newton = f(x, *params)
            below = fx < 0
            lo, hi = np.where(below | (fx == 0), x, lo), np.where(below, hi, x)
            gap = np.where(below, hi, lo) - x  # x is now an end: to the other, +-(hi - lo)
            width = np.abs(gap)
            tol = RTOL * (1 + np.abs(x))  # |x| is |mid| once width <= tol
            done = width <= tol
            if step > NEWTON_STEPS:
                x = _split(lo, hi)
            else:
                half = 0.5 * tol
                length = np.abs(newton)
                inward = newton * gap > 0
                settled = nudge > 0
                creep = (creep + 1) * (inward & (length > 0.5 * last))
                nudge = np.where(settled, np.minimum(nudge, 0.5 * width),
                                 np.maximum(length, half))
                ok = (inward & (creep < CREEP)) | settled | (length <= half)
                far = DAMP * width
                cap = ok & (nudge >= far)
                if cap.any():  # damp: 95% of the way, or to the end after two such steps
                    cap = np.where(cap, gap, zero)
                    ok &= cap * capped >= 0
                    nudge = np.where(cap * capped > 0, width - half, np.minimum(nudge, far))
                capped = cap
                last = nudge
                x_new = x + np.copysign(nudge, gap)
                ok &= (x_new > lo) & (x_new < hi)
                x = x_new if ok.all() else np.where(ok, x_new, _split(lo, hi))
                # Converged rows step next by half a tolerance, then 4 times the last step.
                nudge = np.where(settled, 4 * nudge, half * (ok & (length <= 16 * half)))
                creep = creep * ok
            if done.any():
                finished = rows[done]
                out_lo[finished], out_hi[finished] = lo[done], hi[done]
                if finished.size == rows.size:
                    return out_lo, out_hi
                keep = np.flatnonzero(~done)
                rows, lo, hi, x = rows[keep], lo[keep], hi[keep], x[keep]
                capped, nudge, last, creep = capped[keep], nudge[keep], last[keep], creep[keep]
                zero = zero[keep]
                params = tuple(p[keep] for p in params)
    out_lo[rows], out_hi[rows] = lo, hi  # rows still open after MAX_STEPS, if any
    return out_lo, out_hi


def _split(lo: Array, hi: Array) -> Array:
    """Where to bisect [lo, hi]: the midpoint of asinh, so that a bracket spanning many orders
    of magnitude is split geometrically (as wide as it is, a handful of steps narrows it to
    the root's magnitude) and a narrow one about in the middle."""
    mid = np.sinh(0.5 * (np.arcsinh(lo) + np.arcsinh(hi)))
    return np.where((mid > lo) & (mid < hi), mid, lo + 0.5 * (hi - lo))
