"""DPi for the exponential and power cones, whose projections outside K and its polar lie on
a one-parameter family of boundary rays (the ray is found by a scalar root search, `_root`):
DPi follows from differentiating the family.
"""

from __future__ import annotations

import numpy as np

from ._layout import Array


def _solve(J: Array, B: Array) -> Array:
    """J^-1 B for stacks of small matrices; the pseudo-inverse only if some J is singular."""
    try:
        return np.asarray(np.linalg.solve(J, B), dtype=np.float64)
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(J) @ B, dtype=np.float64)


def _cross(u: Array, w: Array) -> Array:
    """Row-wise cross products of (k, 3) stacks (np.cross costs more on small stacks)."""
    u0, u1, u2 = u.T
    w0, w1, w2 = w.T
    return np.stack([u1 * w2 - u2 * w1, u2 * w0 - u0 * w2, u0 * w1 - u1 * w0], axis=1)


def ray_family_derivative(v: Array, a: Array, da: Array, b: Array, db: Array) -> Array:
    """DPi at rows v whose projection lies on a smooth one-parameter family of boundary rays.

    a(theta) spans a ray of K and b(theta) the outward normal there (a . b = 0); da, db are their
    theta-derivatives, each pair scaled by any positive factor. With unit rays,
    v = alpha a + beta b, so dv = [a, b, alpha a' + beta b'] d(alpha, beta, theta) and
    dp = [a, 0, alpha a'] d(alpha, beta, theta), so DPi = N J^-1 with N = [a, 0, alpha a'] and
    J = [a, b, alpha a' + beta b']. Only unit vectors and |v| enter, so this stays well
    conditioned as alpha -> 0 or beta -> 0 (next to the polar cone or to K).
    """
    na, nb = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
    a, da, b, db = a / na, da / na, b / nb, db / nb
    # Derivatives of the unit vectors: the parts of da, db perpendicular to a, b, written as
    # a x (da x a) because da - a (a . da) cancels catastrophically when a is nearly an axis.
    units, tangents = np.concatenate([a, b]), np.concatenate([da, db])
    da, db = np.split(_cross(units, _cross(tangents, units)), 2)
    alpha = np.maximum(np.sum(v * a, axis=1), 0.0)[:, None]
    beta = np.maximum(np.sum(v * b, axis=1), 0.0)[:, None]
    # N J^-1 is unchanged by scaling the third columns of both alike: make J's a unit vector, as
    # its others are, or a solve with a column of 1e-60 (alpha a' with a' tiny) loses N J^-1.
    turn = alpha * da + beta * db
    scale = np.linalg.norm(turn, axis=1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    J = np.stack([a, b, turn / scale], axis=2)
    N = np.stack([a, np.zeros_like(a), alpha * da / scale], axis=2)
    D = np.swapaxes(_solve(np.swapaxes(J, 1, 2), np.swapaxes(N, 1, 2)), 1, 2)  # N J^-1
    return 0.5 * (D + np.swapaxes(D, 1, 2))
