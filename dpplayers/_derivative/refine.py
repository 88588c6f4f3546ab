"""Newton polishing of a solver's answer on the KKT residual F(x, v) = 0 of :mod:`.kkt`.

Interior-point and splitting solvers stop at ~1e-7…1e-9 on exponential and power cones;
``solver_args={"refine": k}`` takes k Newton steps with J, factorised by ``Direct``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from ..cones import ConeDims, ProductCone
from .kkt import kkt_operator, kkt_pattern
from .linear_solvers import Direct
from .pattern import KKTPattern

FloatArray = npt.NDArray[np.float64]


def kkt_residual(P_full: sp.csc_matrix | None, A: sp.csc_matrix, b: FloatArray, c: FloatArray,
                 x: FloatArray, v: FloatArray, cone: ProductCone) -> FloatArray:
    """F(x, v) = [P x + Aᵀ Π_K*(v) + c ; A x + Π_K*(v) − v − b]; zero exactly at a solution.

    ``cone`` is the dual cone K*."""
    y = cone.project(v)
    Px = P_full @ x if P_full is not None else 0.0
    return np.concatenate([Px + A.T @ y + c, A @ x + y - v - b])


def newton_refine(P_upper: sp.csc_matrix | None, A: sp.csc_matrix, b: FloatArray,
                  c: FloatArray, x: FloatArray, y: FloatArray, s: FloatArray, cones: ConeDims,
                  steps: int, pattern: KKTPattern | None = None,
                  cone: ProductCone | None = None) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """Polish a solver's answer with Newton steps on F(x, v) = 0 (J is its Jacobian).

    Interior-point and splitting solvers stop at ~1e-7…1e-9 on exponential and power
    cones; a few Newton steps drive the KKT residual to rounding level wherever J is
    nonsingular, which makes values and derivatives consistent to many more digits. A
    step that does not reduce the residual is rejected. Returns (x, y, s, ‖F‖∞).
    """
    n = x.size
    K = cone if cone is not None else ProductCone.from_dims(cones, dual=True)
    pattern = pattern if pattern is not None else kkt_pattern(P_upper, A, K)
    P = pattern.full_P(P_upper.data) if P_upper is not None else None
    xv = np.concatenate([x, y - s])
    res = kkt_residual(P, A, b, c, xv[:n], xv[n:], K)
    for _ in range(steps):
        op = kkt_operator(P_upper, A, K.project(xv[n:]), K.project(xv[n:]) - xv[n:], cones,
                          pattern, K)
        direct = Direct()
        step = direct.compute(direct.init(op), res[:, None], transpose=False)[0][:, 0]
        trial = xv - step
        new = kkt_residual(P, A, b, c, trial[:n], trial[n:], K)
        if not np.all(np.isfinite(new)) or np.abs(new).max() >= np.abs(res).max():
            break
        xv, res = trial, new
    yv = K.project(xv[n:])
    return xv[:n], yv, yv - xv[n:], float(np.abs(res).max(initial=0.0))
