"""The exponential cone and its dual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._base import AbstractCone, moreau_dproject
from ._exponential_rows import exp_dproject_rows
from ._layout import Array, Mask
from ._operators import DenseBlocks
from ._ray_family import ray_family_derivative
from ._root import NOISE, POLISH_STEPS, bracketed_newton, newton_polish


def _exp_regions(v: Array) -> tuple[Mask, Mask, Mask, Mask]:
    """Masks: v in K, in the polar -K*, under the face rule (x <= 0, y <= 0), and the rest."""
    r, s, t = v.T
    with np.errstate(divide="ignore", invalid="ignore"):
        in_k = ((s > 0) & (t > 0) & (r <= s * np.log(t / s))) | ((r <= 0) & (s == 0) & (t >= 0))
        in_polar = ((r > 0) & (t < 0) & (s <= r * (1 + np.log(-t / r)))) | (
            (r == 0) & (s <= 0) & (t <= 0))
    in_polar &= ~in_k
    face = (r <= 0) & (s <= 0) & ~in_k & ~in_polar
    return in_k, in_polar, face, ~(in_k | in_polar | face)


def _exp_h(rho: Array, r: Array, s: Array, t: Array) -> tuple[Array, Array]:
    """h(rho) / (e^rho + e^-rho) and its Newton step (h as in `_exp_rho`).

    h = ((rho - 1) r + s) e^rho - (r - rho s) e^-rho - (rho^2 - rho + 1) t. Divided by
    w = e^rho + e^-rho it cannot overflow, and it stays smooth (e^-|rho| would put a kink at 0)
    and tends to a straight line on both sides, where Newton's method on h itself would crawl.
    With e+ = e^rho / w and e- = e^-rho / w = 1 - e+:
    h / w = rho s - r + e+ (rho (r - s) + s) - (rho^2 - rho + 1) t / w,
    h' / w = r + s - rho s + e+ (rho (r + s) - r) - (2 rho - 1) t / w,
    (h / w)' = h' / w - (e+ - e-) h / w. Where |h / w| is below its rounding error (estimated
    from its terms, never above it), it is returned as 0.
    """
    q = np.exp(-np.abs(rho))
    g = q * q
    inv = 1 / (1 + g)
    ep = np.where(rho > 0, inv, g * inv)
    tw = t * (q * inv)
    rho_s = rho * s
    rising, bump = ep * (rho * (r - s) + s), (rho * (rho - 1) + 1) * tw
    h = rho_s - r + rising - bump
    dh = r + s - rho_s + ep * (rho * (r + s) - r) - (2 * rho - 1) * tw
    step = -h / (dh - (2 * ep - 1) * h)
    # h within its rounding error of 0 is a root as good as any: report 0, which ends the search
    noise = NOISE * (np.abs(rho_s) + np.abs(r) + np.abs(rising) + np.abs(bump))
    return np.where(np.abs(h) <= noise, 0.0, h), step


def _exp_rho(r: Array, s: Array, t: Array, guess: Array | None = None) -> Array:
    """Root rho = x/y of the projection's ray (Friberg 2021's univariate problem).

    The projection is p = sigma a(rho), a = (rho, 1, e^rho), and v - p = mu b(rho) with
    b = (1, 1 - rho, -e^-rho); a and b are orthogonal, so v lies in their span: rho is the root of
    h(rho) = <v, a x b>, increasing where sigma, mu > 0. sigma > 0 and mu > 0 give
    1 - y/x < rho < x/y; when one side is unbounded, |p| <= |v| (or |v - p| <= |v|) gives the
    logarithmic bound used below. The root is found by `bracketed_newton` on h / w (`_exp_h`)
    from ``guess`` (kept inside the bracket) or the middle of that bracket, to the width
    bisection would reach.
    """
    norm = np.sqrt(r * r + s * s + t * t)
    with np.errstate(divide="ignore", invalid="ignore"):
        far_lo = -np.maximum(np.maximum(2 * np.abs(r / s), 1.0), 2 * np.log(6 * norm / s))
        lo = np.where(r > 0, 1 - s / r, far_lo)
        hi = np.where(s > 0, r / s, np.maximum(2 * lo, 2 * np.log(2 * norm / r)))
    start = 0.5 * (lo + hi)
    if guess is None:
        lo, hi = bracketed_newton(_exp_h, (r, s, t), lo, hi, start)
        return 0.5 * (lo + hi)
    margin = 1e-3 * (hi - lo)
    ok = np.isfinite(guess) & (guess > lo + margin) & (guess < hi - margin)
    start = np.where(ok, guess, start)
    rho, root = newton_polish(_exp_h, (r, s, t), start, lo, hi)
    rest = np.flatnonzero(~root)
    if rest.size:  # the bracketed search, for the rows plain Newton did not settle
        lo_r, hi_r = bracketed_newton(_exp_h, (r[rest], s[rest], t[rest]), lo[rest], hi[rest],
                                      start[rest])
        rho[rest] = 0.5 * (lo_r + hi_r)
    return rho


#: Seeded rows up to this many (cones × batch elements) take `exp_dproject_rows`, on Python
#: floats. Measured (medians of 400 calls, random rows seeded by their projections): 1 row
#: 9 µs against 275 vectorised, 8 rows 18 against 137, 32 rows 85 against 146; the
#: vectorised cost barely grows with the rows, the row-by-row one by ~2.5 µs a row.
ROW_BY_ROW = 32


def _exp_rays(rho: Array) -> tuple[Array, Array, Array, Array]:
    """a = (rho, 1, e^rho), b = (1, 1 - rho, -e^-rho) and their derivatives, overflow-free.

    a, a' are scaled by lo = e^-max(rho, 0) and b, b' by hi = e^min(rho, 0), which leaves
    each entry a product of rho, lo and hi (e^rho lo = hi, e^-rho hi = lo): four stacks
    of three columns, where a branch per sign of rho took eight stacks and four selections.
    """
    lo, hi = np.exp(-np.maximum(rho, 0.0)), np.exp(np.minimum(rho, 0.0))
    zero = np.zeros_like(rho)
    return (np.stack([rho * lo, lo, hi], 1), np.stack([lo, zero, hi], 1),
            np.stack([hi, (1 - rho) * hi, -lo], 1), np.stack([zero, -hi, lo], 1))


@dataclass(frozen=True)
class ExponentialCone(AbstractCone):
    """closure{(x, y, z): y > 0, y exp(x/y) <= z}; x must be (k, 3)."""

    uses_near: ClassVar[bool] = True

    def project(self, x: Array) -> Array:
        in_k, _, face, generic = _exp_regions(x)
        p = np.zeros_like(x)
        p[in_k] = x[in_k]
        p[face, 0], p[face, 2] = x[face, 0], np.maximum(x[face, 2], 0)
        # onto the ray a(rho), so that p lies in K exactly
        a = _exp_rays(_exp_rho(*x[generic].T))[0]
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        p[generic] = np.maximum(np.sum(x[generic] * a, axis=1), 0.0)[:, None] * a
        return p

    def dproject(self, x: Array, near: Array | None = None) -> DenseBlocks:
        if near is not None and len(x) <= ROW_BY_ROW:
            D = exp_dproject_rows(x, near, POLISH_STEPS)
            if D is not None:
                return DenseBlocks(D)
        in_k, _, face, generic = _exp_regions(x)
        D = np.zeros(x.shape + (3,))
        D[in_k] = np.eye(3)
        D[face, 0, 0], D[face, 2, 2] = 1.0, x[face, 2] >= 0
        guess = None
        if near is not None:  # near lies close to the ray a(rho) = (rho, 1, e^rho): rho ≈ x / y
            with np.errstate(divide="ignore", invalid="ignore"):
                guess = near[generic, 0] / near[generic, 1]
        rho = _exp_rho(*x[generic].T, guess=guess)
        D[generic] = ray_family_derivative(x[generic], *_exp_rays(rho))
        return DenseBlocks(D)

    def dual(self) -> DualExponentialCone:
        return DualExponentialCone()


@dataclass(frozen=True)
class DualExponentialCone(AbstractCone):
    """{(u, v, w): u < 0, -u exp(v/u) <= e w} ∪ {(0, v, w): v, w >= 0}; via Moreau."""

    uses_near: ClassVar[bool] = True

    def project(self, x: Array) -> Array:
        return x + ExponentialCone().project(-x)

    def dproject(self, x: Array, near: Array | None = None) -> DenseBlocks:
        return moreau_dproject(ExponentialCone(), x, near)

    def dual(self) -> ExponentialCone:
        return ExponentialCone()
