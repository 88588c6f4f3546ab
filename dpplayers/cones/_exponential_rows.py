"""The exponential cone's DPi row by row on Python floats, for a few seeded rows.

`ExponentialCone.dproject` is vectorised: about 70 numpy calls whatever the number of
cones, each with a fixed cost of 1–3 µs, so a program with two exponential cones (a small
GP) spent most of its backward pass there (gp_box: ~240 of ~420 µs per vjp). For a handful
of rows with a solver's seed the same steps cost a few µs per row in `math`: the regions of
`_exp_regions`, the bracket and seeded Newton polish of `_exp_rho` (`_exp_h`'s formulas),
the rays of `_exp_rays` and `ray_family_derivative`'s closed form. A row the polish does not
settle returns None, and the caller takes the vectorised path (its bracketed search).
"""

from __future__ import annotations

import math

import numpy as np

from ._layout import Array
from ._root import NOISE

Matrix = tuple[tuple[float, float, float], ...]
IDENTITY: Matrix = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
ZERO: Matrix = ((0.0, 0.0, 0.0),) * 3


def exp_dproject_rows(x: Array, near: Array, polish_steps: int) -> Array | None:
    """DPi_K at each row of x (k, 3), seeded by ``near`` (close to the projections); None
    where some generic row's seeded Newton polish does not reach a root (or a step
    meets a value `math` refuses where numpy would carry an inf or NaN on)."""
    out = []
    for (r, s, t), (n0, n1, _) in zip(x.tolist(), near.tolist()):
        try:
            block = _row(r, s, t, n0 / n1 if n1 != 0 else math.nan, polish_steps)
        except (ArithmeticError, ValueError):  # a log of 0 or an overflow: numpy's inf/NaN
            return None
        if block is None:
            return None
        out.append(block)
    return np.array(out, dtype=np.float64).reshape(-1, 3, 3)


def _row(r: float, s: float, t: float, guess: float, polish_steps: int) -> Matrix | None:
    """DPi at one row (see `_exp_regions` for the regions, in the same order)."""
    if (s > 0 and t > 0 and r <= s * math.log(t / s)) or (r <= 0 and s == 0 and t >= 0):
        return IDENTITY
    if (r > 0 and t < 0 and s <= r * (1 + math.log(-t / r))) or (r == 0 and s <= 0 and t <= 0):
        return ZERO
    if r <= 0 and s <= 0:  # the face rule
        return ((1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0 if t >= 0 else 0.0))
    rho = _rho(r, s, t, guess, polish_steps)
    return None if rho is None else _ray_derivative(r, s, t, rho)


def _rho(r: float, s: float, t: float, guess: float, polish_steps: int) -> float | None:
    """`_exp_rho`'s bracket and `newton_polish`'s seeded Newton steps on h / w: the root, or None.

    Generic rows have r > 0 or s > 0 (r, s <= 0 is the face rule), so the logarithms
    below are only taken where `_exp_rho` uses them."""
    norm = math.sqrt(r * r + s * s + t * t)
    lo = 1 - s / r if r > 0 else -max(2 * abs(r / s), 1.0, 2 * math.log(6 * norm / s))
    hi = r / s if s > 0 else max(2 * lo, 2 * math.log(2 * norm / r))
    margin = 1e-3 * (hi - lo)
    rho = guess if lo + margin < guess < hi - margin else 0.5 * (lo + hi)  # NaN fails
    for step in range(polish_steps + 1):
        h, newton = _h(rho, r, s, t)
        if h == 0:
            return rho if lo < rho < hi else None
        if step == polish_steps or newton is None:
            return None
        rho += newton
        if not math.isfinite(rho):
            return None
    return None


def _h(rho: float, r: float, s: float, t: float) -> tuple[float, float | None]:
    """`_exp_h` at one point: h / w (0 within its rounding error) and Newton's step (None
    where it divides by zero)."""
    q = math.exp(-abs(rho))
    g = q * q
    inv = 1 / (1 + g)
    ep = inv if rho > 0 else g * inv
    tw = t * (q * inv)
    rho_s = rho * s
    rising, bump = ep * (rho * (r - s) + s), (rho * (rho - 1) + 1) * tw
    h = rho_s - r + rising - bump
    if abs(h) <= NOISE * (abs(rho_s) + abs(r) + abs(rising) + abs(bump)):
        return 0.0, 0.0
    dh = r + s - rho_s + ep * (rho * (r + s) - r) - (2 * rho - 1) * tw
    denominator = dh - (2 * ep - 1) * h
    return h, (-h / denominator if denominator != 0 else None)


def _ray_derivative(r: float, s: float, t: float, rho: float) -> Matrix:
    """`ray_family_derivative` with `_exp_rays` at one row: a aᵀ + w c cᵀ."""
    lo, hi = math.exp(-max(rho, 0.0)), math.exp(min(rho, 0.0))
    rho_lo, fall = rho * lo, (1 - rho) * hi
    na = math.sqrt(rho_lo * rho_lo + lo * lo + hi * hi)
    nb = math.sqrt(hi * hi + fall * fall + lo * lo)
    a0, a1, a2 = rho_lo / na, lo / na, hi / na
    b0, b1, b2 = hi / nb, fall / nb, -lo / nb
    c0, c1, c2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0
    turn_a = max(r * a0 + s * a1 + t * a2, 0.0) * ((lo * c0 + hi * c2) / na)
    turn = turn_a + max(r * b0 + s * b1 + t * b2, 0.0) * ((lo * c2 - hi * c1) / nb)
    w = turn_a / turn if turn != 0 else 0.0
    wc0, wc1, wc2 = w * c0, w * c1, w * c2
    return ((a0 * a0 + wc0 * c0, a0 * a1 + wc0 * c1, a0 * a2 + wc0 * c2),
            (a1 * a0 + wc1 * c0, a1 * a1 + wc1 * c1, a1 * a2 + wc1 * c2),
            (a2 * a0 + wc2 * c0, a2 * a1 + wc2 * c1, a2 * a2 + wc2 * c2))
