"""Shared by the exponential and power cones, whose projections outside K and its polar lie on
a one-parameter family of boundary rays: the ray is found by a scalar root search, and DPi
follows from differentiating the family.
"""

from __future__ import annotations

import numpy as np

from ._layout import Array

BISECTION_STEPS = 300  # ample: every bracket reaches float resolution in far fewer


def _solve(J: Array, B: Array) -> Array:
    """J^-1 B for stacks of small matrices; the pseudo-inverse only if some J is singular."""
    try:
        return np.asarray(np.linalg.solve(J, B), dtype=np.float64)
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(J) @ B, dtype=np.float64)


def ray_family_derivative(v: Array, a: Array, da: Array, b: Array, db: Array) -> Array:
    """DPi at rows v whose projection lies on a smooth one-parameter family of boundary rays.

    a(theta) spans a ray of K and b(theta) the outward normal there (a . b = 0); da, db are their
    theta-derivatives, each pair scaled by any positive factor. With unit rays,
    v = alpha a + beta b, so dv = [a, b, alpha a' + beta b'] d(alpha, beta, theta) and
    dp = [a, 0, alpha a'] d(alpha, beta, theta). Only unit vectors and |v| enter, so this stays
    well conditioned as alpha -> 0 or beta -> 0 (next to the polar cone or to K).
    """
    na, nb = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
    a, da, b, db = a / na, da / na, b / nb, db / nb
    da = da - a * np.sum(a * da, axis=1, keepdims=True)  # derivative of the unit vector
    db = db - b * np.sum(b * db, axis=1, keepdims=True)
    alpha = np.maximum(np.sum(v * a, axis=1), 0.0)[:, None]
    beta = np.maximum(np.sum(v * b, axis=1), 0.0)[:, None]
    J = np.stack([a, b, alpha * da + beta * db], axis=2)
    N = np.stack([a, np.zeros_like(a), alpha * da], axis=2)
    D = np.swapaxes(_solve(np.swapaxes(J, 1, 2), np.swapaxes(N, 1, 2)), 1, 2)  # N J^-1
    return 0.5 * (D + np.swapaxes(D, 1, 2))
