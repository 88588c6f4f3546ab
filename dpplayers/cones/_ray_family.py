"""DPi for the exponential and power cones, whose projections outside K and its polar lie on
a one-parameter family of boundary rays (the ray is found by a scalar root search, `_root`):
DPi follows from differentiating the family.
"""

from __future__ import annotations

import numpy as np

from ._layout import Array


def _cross(u: Array, w: Array) -> Array:
    """Row-wise cross products of (k, 3) stacks (np.cross costs more on small stacks)."""
    u0, u1, u2 = u.T
    w0, w1, w2 = w.T
    return np.stack([u1 * w2 - u2 * w1, u2 * w0 - u0 * w2, u0 * w1 - u1 * w0], axis=1)


def ray_family_derivative(v: Array, a: Array, da: Array, b: Array, db: Array) -> Array:
    """DPi at rows v whose projection lies on a smooth one-parameter family of boundary rays.

    a(theta) spans a ray of K and b(theta) the outward normal there; da, db are their
    theta-derivatives, each pair scaled by any positive factor. b is normal to K's boundary,
    which holds a and a', so b . a' = 0, and a . b = 0 for every theta gives a . b' = 0: with
    unit a, b and c = a x b, both tangents lie along c (a' ⟂ a, b' ⟂ b for unit vectors). In
    the orthonormal frame (a, b, c), v = alpha a + beta b moves as
    dv = a dalpha + b dbeta + (alpha ta + beta tb) c dtheta and its projection alpha a as
    dp = a dalpha + alpha ta c dtheta (ta = a' . c, tb = b' . c), so

        DPi = a aᵀ + w c cᵀ,  w = alpha ta / (alpha ta + beta tb) ∈ [0, 1]

    (w = 0 where both terms vanish: DPi's pseudo-inverse limit). A closed form, where a
    3 × 3 solve per row cost ~40 numpy calls more; it is symmetric by construction.
    """
    na, nb = np.sqrt(np.vecdot(a, a)), np.sqrt(np.vecdot(b, b))
    a, b = a / na[:, None], b / nb[:, None]
    c = _cross(a, b)
    turn_a = np.maximum(np.vecdot(v, a), 0.0) * (np.vecdot(da, c) / na)
    turn = turn_a + np.maximum(np.vecdot(v, b), 0.0) * (np.vecdot(db, c) / nb)
    w = np.divide(turn_a, turn, out=np.zeros_like(turn), where=turn != 0)
    return a[:, :, None] * a[:, None, :] + (w[:, None, None] * c[:, :, None]) * c[:, None, :]
