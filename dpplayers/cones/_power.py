"""The power cone and its dual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._base import AbstractCone, moreau_dproject
from ._layout import Array, Mask
from ._operators import DenseBlocks
from ._ray_family import ray_family_derivative
from ._root import DAMP, NOISE, bracketed_newton, newton_polish

TAU_RANGE = (-745.0, 40.0)  # logit(r / w0) where r / w0 underflows to 0 and rounds to 1


def _pow_coordinates(tau: Array, x0: Array, y0: Array, w0: Array, a: Array
                     ) -> tuple[Array, Array, Array, Array, Array, Array]:
    """At r = w0 / (1 + e^-tau): r / w0, 1 - r / w0, x, y and the square roots below.

    x is the root x >= 0 of x^2 - x0 x - a r (w0 - r) = 0, written without cancellation when
    x0 < 0 (y likewise with 1 - a); 1 - r / w0 comes from tau, exact even as r -> w0.
    """
    e = np.exp(-np.abs(tau))
    inv = 1 / (1 + e)
    up = tau >= 0
    frac, rest = np.where(up, inv, e * inv), np.where(up, e * inv, inv)
    c = (w0 * frac) * (w0 * rest)
    cx, cy = a * c, (1 - a) * c
    root_x, root_y = np.sqrt(x0 * x0 + 4 * cx), np.sqrt(y0 * y0 + 4 * cy)
    x = np.where(x0 >= 0, 0.5 * (x0 + root_x), 2 * cx / (root_x - x0))
    y = np.where(y0 >= 0, 0.5 * (y0 + root_y), 2 * cy / (root_y - y0))
    return frac, rest, x, y, root_x, root_y


def _pow_phi(tau: Array, x0: Array, y0: Array, w0: Array, a: Array, in_r: Mask
             ) -> tuple[Array, Array]:
    """phi = log(r / (x^a y^(1-a))) at tau = logit(r / w0), and its Newton step in tau.

    With k = r g'/g for g = x^a y^(1-a) (x' = a (w0 - 2r) / root_x), d phi / d log r = 1 - k
    and d log r / d tau = 1 - r / w0. Near r = 0, phi is linear in log r when x0 or y0 is
    positive (g ~ r^a or g ~ r^(1-a)), and near r = w0 linear in log(w0 - r) when one is
    negative (x or y ~ w0 - r): tau is linear in both. Where both are negative, phi is instead
    about linear in r for small r, so rows ``in_r`` take Newton's step in r there. Where
    |phi| is below its rounding error, it is returned as 0.
    """
    frac, rest, x, y, root_x, root_y = _pow_coordinates(tau, x0, y0, w0, a)
    b = 1 - a
    log_frac, log_x, log_y = (-np.log1p(np.exp(-np.abs(tau))) - np.maximum(-tau, 0),
                              a * np.log(x / w0), b * np.log(y / w0))
    phi = log_frac - log_x - log_y
    k = (w0 * frac) * (w0 * (rest - frac)) * (a * a / (root_x * x) + b * b / (root_y * y))
    dlog_r = -phi / (1 - k)  # Newton's step in log r
    # Newton's step in r (divided by w0), at most 95% of the way to 0 or to w0
    frac_new = np.minimum(frac * np.maximum(1 + dlog_r, 1 - DAMP), frac + DAMP * rest)
    step_r = np.log(frac_new) - np.log1p(-frac_new) - tau
    step = np.where(in_r & (frac < 0.5), step_r, dlog_r / rest)
    # phi within its rounding error of 0 is a root as good as any: report 0, ending the search
    noise = NOISE * (1 + np.abs(log_frac) + np.abs(log_x) + np.abs(log_y))
    return np.where(np.abs(phi) <= noise, 0.0, phi), step


def _pow_regions(v: Array, a: Array) -> tuple[Mask, Mask, Mask, Mask]:
    """Masks: v in K, in the polar -K*, z = 0 (else), and the rest."""
    x0, y0, z0 = v.T
    with np.errstate(invalid="ignore"):
        in_k = (x0 >= 0) & (y0 >= 0) & (np.maximum(x0, 0) ** a * np.maximum(y0, 0) ** (1 - a)
                                        >= np.abs(z0))
        in_polar = (x0 <= 0) & (y0 <= 0) & ~in_k & (
            np.maximum(-x0 / a, 0) ** a * np.maximum(-y0 / (1 - a), 0) ** (1 - a) >= np.abs(z0))
    flat = (z0 == 0) & ~in_k & ~in_polar  # by symmetry in z: project onto (x, y) >= 0
    return in_k, in_polar, flat, ~(in_k | in_polar | flat)


def _pow_solve(v: Array, a: Array, near: Array | None = None) -> tuple[Array, Array, Array]:
    """x, y and z of the projection for z != 0 outside K and its polar (Hien 2015).

    With r = |z| of the projection and w0 = |z0|, stationarity gives x(r), y(r) as roots of
    x^2 - x0 x - a r (w0 - r) = 0 (and 1 - a for y); r in (0, w0) is the unique root of
    x^a y^(1-a) = r, found by `bracketed_newton` on `_pow_phi` in tau = logit(r / w0). |z| is
    then lowered to x^a y^(1-a) where rounding put it above, so the result lies in K. With
    ``near`` (close to the projections), plain Newton steps from its tau first: a row whose
    phi they bring within its rounding error of 0 (the test that ends the bracketed search
    there) is a root; only the others are searched (a p-norm fit's 60 cones, batch 1: the
    derivative's cones 0.40 against 0.75 ms).
    """
    x0, y0, z0 = v.T
    w0 = np.abs(z0)
    in_r = (x0 < 0) & (y0 < 0)
    tau, todo = np.zeros_like(w0), np.ones(w0.shape, bool)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        if near is not None:
            frac = np.abs(near[:, 2]) / w0
            seed = np.log(frac) - np.log1p(-frac)
            ok = np.isfinite(seed) & (seed > TAU_RANGE[0]) & (seed < TAU_RANGE[1])
            seed, root = newton_polish(_pow_phi, (x0, y0, w0, a, in_r),
                                       np.where(ok, seed, 0.0), *TAU_RANGE)
            todo = ~(root & ok)
            tau = np.where(todo, 0.0, seed)
        if todo.any():
            at = np.flatnonzero(todo)
            lo, hi = np.full(at.size, TAU_RANGE[0]), np.full(at.size, TAU_RANGE[1])
            tau[at], _ = bracketed_newton(_pow_phi, (x0[at], y0[at], w0[at], a[at], in_r[at]),
                                          lo, hi, np.zeros(at.size))
        frac, _, x, y, _, _ = _pow_coordinates(tau, x0, y0, w0, a)
        z = np.minimum(w0 * frac, x**a * y ** (1 - a))
    return x, y, np.sign(z0) * z


def _pow_derivative(v: Array, a: Array, near: Array | None = None) -> Array:
    """Derivative at generic rows: that of a projection onto a family of boundary rays.

    The ray through p is (t, 1 - t, g) with t = x / (x + y), g = t^a (1 - t)^(1 - a), its normal
    (-a g/t, -(1 - a) g/(1 - t), 1) (z negated below the plane); theta = log(t / (1 - t)) keeps
    every derivative bounded. t is accurate even where r is not: next to the polar cone r is
    tiny and ill-determined, but x / y tends to a limit.
    """
    x, y, _ = _pow_solve(v, a, near)
    sign = np.where(v[:, 2] < 0, -1.0, 1.0)
    t = np.clip(np.divide(x, x + y, out=np.full_like(x, 0.5), where=x + y > 0), 1e-300,
                1 - 1e-16)
    g_t, g_1t = ((1 - t) / t) ** (1 - a), (t / (1 - t)) ** a  # g/t, g/(1-t)
    g, o, zero = t * g_t, np.ones_like(t), np.zeros_like(t)
    ray = np.stack([t, 1 - t, sign * g], 1)
    dray = np.stack([t * (1 - t), -t * (1 - t), sign * g * (a - t)], 1)
    normal = np.stack([-a * g_t, -(1 - a) * g_1t, sign * o], 1)
    dnormal = (a * (1 - a))[:, None] * np.stack([g_t, -g_1t, zero], 1)
    return ray_family_derivative(v, ray, dray, normal, dnormal)


@dataclass(frozen=True, eq=False)
class PowerCone(AbstractCone):
    """{(x, y, z): x^alpha y^(1-alpha) >= |z|, x, y >= 0}; ``alpha`` has one entry per cone."""

    alpha: Array
    uses_near: ClassVar[bool] = True

    def __post_init__(self) -> None:
        alpha = np.asarray(self.alpha, dtype=float)
        if alpha.ndim != 1 or not np.all((alpha > 0) & (alpha < 1)):
            raise ValueError(f"PowerCone.alpha must be a 1-D array in (0, 1), got {self.alpha!r}.")

    def project(self, x: Array) -> Array:
        a = np.asarray(self.alpha, dtype=float)
        in_k, _, flat, generic = _pow_regions(x, a)
        p = np.zeros_like(x)
        p[in_k] = x[in_k]
        p[flat, :2] = np.maximum(x[flat, :2], 0)
        p[generic] = np.stack(_pow_solve(x[generic], a[generic]), 1)
        return p

    def dproject(self, x: Array, near: Array | None = None) -> DenseBlocks:
        a = np.asarray(self.alpha, dtype=float)
        in_k, _, flat, generic = _pow_regions(x, a)
        D = np.zeros(x.shape + (3,))
        D[in_k] = np.eye(3)
        # At z = 0 the limit of the generic derivative as z -> 0: dz/dz0 -> 1, 1/2 or 0 as the
        # exponent of the negative coordinate is below, at or above 1/2.
        D[flat, 0, 0], D[flat, 1, 1] = x[flat, 0] > 0, x[flat, 1] > 0
        exponent = np.where(x[flat, 0] < 0, a[flat], 1 - a[flat])
        D[flat, 2, 2] = np.where(exponent < 0.5, 1.0, np.where(exponent == 0.5, 0.5, 0.0))
        D[generic] = _pow_derivative(x[generic], a[generic],
                                     None if near is None else near[generic])
        return DenseBlocks(D)

    def dual(self) -> DualPowerCone:
        return DualPowerCone(self.alpha)

    def repeat(self, copies: int) -> PowerCone:
        return PowerCone(np.tile(np.asarray(self.alpha, dtype=float), copies))


@dataclass(frozen=True, eq=False)
class DualPowerCone(AbstractCone):
    """{(u, v, w): (u/alpha)^alpha (v/(1-alpha))^(1-alpha) >= |w|, u, v >= 0}; via Moreau."""

    alpha: Array
    uses_near: ClassVar[bool] = True

    def __post_init__(self) -> None:
        PowerCone(self.alpha)  # same validation

    def project(self, x: Array) -> Array:
        return x + PowerCone(self.alpha).project(-x)

    def dproject(self, x: Array, near: Array | None = None) -> DenseBlocks:
        return moreau_dproject(PowerCone(self.alpha), x, near)

    def dual(self) -> PowerCone:
        return PowerCone(self.alpha)

    def repeat(self, copies: int) -> DualPowerCone:
        return DualPowerCone(np.tile(np.asarray(self.alpha, dtype=float), copies))
