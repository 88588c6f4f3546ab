"""Active sets of a solved batch, read from the canonical dual y and slack s.

Where the solution map is differentiable, a small change of parameters keeps each cone's
regime: for a non-negative row, active (y > 0, s = 0) or inactive (s > 0, y = 0); for any
other cone block, y = 0, s = 0 or both on the boundary. First-order predictions can only be
trusted between points with the same regimes. A row where both y and s vanish (weakly
active: not strictly complementary) gets a regime of its own, so it also counts as a change.
Cones are walked in the compiled program's order (zero, non-negative, SOC, PSD, exp, exp
dual, power); zero-cone rows (equalities) have no regime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

#: y or s counts as zero below this, relative to the largest |y|, |s| of the element (and
#: at least 1): well above the solvers' tight tolerances, well below a real multiplier.
ACTIVE_TOL = 1e-6
INACTIVE, ACTIVE, WEAK = 0, 1, 2


if TYPE_CHECKING:
    from .._solution import Solution

IntArray = npt.NDArray[np.int8]


def regimes(sol: Solution) -> IntArray:
    """Per element, the regime of every non-negative row and cone block: (B, r) codes."""
    cones = sol.program.cones
    y, s = np.asarray(sol.y), np.asarray(sol.s)  # (m, B)
    scale = np.maximum(1.0, np.maximum(np.abs(y).max(axis=0), np.abs(s).max(axis=0)))
    tol = ACTIVE_TOL * scale
    y_zero, s_zero = _row_zero(y, tol), _row_zero(s, tol)
    codes = []
    start = cones.zero
    codes.append(_codes(y_zero[start : start + cones.nonneg], s_zero[start : start + cones.nonneg]))
    start += cones.nonneg
    blocks = [*cones.soc, *(k * (k + 1) // 2 for k in cones.psd),
              *([3] * (cones.exp + cones.exp_dual)), *([3] * len(cones.power))]
    for size in blocks:
        rows = slice(start, start + size)
        codes.append(_codes(y_zero[rows].all(axis=0, keepdims=True),
                            s_zero[rows].all(axis=0, keepdims=True)))
        start += size
    return np.concatenate(codes, axis=0).T if codes else np.zeros((y.shape[1], 0), np.int8)


def _row_zero(z: npt.NDArray[np.float64], tol: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    return np.abs(z) <= tol[None, :]


def _codes(y_zero: npt.NDArray[np.bool_], s_zero: npt.NDArray[np.bool_]) -> IntArray:
    """ACTIVE where only s vanishes, INACTIVE where only y does, WEAK where both do; a cone
    block with neither zero (both on the boundary) is ACTIVE + WEAK + 1."""
    out = np.full(y_zero.shape, WEAK + 1, np.int8)
    out[s_zero & ~y_zero] = ACTIVE
    out[y_zero & ~s_zero] = INACTIVE
    out[y_zero & s_zero] = WEAK
    return out


def changed(base: Solution, others: Solution) -> npt.NDArray[np.bool_]:
    """Per element of ``others``: whether any regime differs from ``base``'s (element 0)."""
    r0 = regimes(base)[0]
    return (regimes(others) != r0[None, :]).any(axis=1)


def weak(sol: Solution) -> npt.NDArray[np.bool_]:
    """Per element: whether some row is weakly active (y and s both zero)."""
    return (regimes(sol) == WEAK).any(axis=1)
