"""The canonical optimal value and its gradient with respect to the program's data.

For min cᵀx + ½xᵀPx + d s.t. Ax + s = b, s ∈ K (dual y ∈ K*, Px + Aᵀy + c = 0), the
envelope theorem gives the derivative of the optimal value p* as the derivative of the
Lagrangian cᵀx + ½xᵀPx + d + yᵀ(Ax − b) at the fixed solution (x, y):

    dp* = dcᵀx + ½xᵀdP x + yᵀ(dA x − db) + dd.

No linear system is solved: the cotangents on (P upper, A, b, c) below, pulled back through
the maps C, are the gradient (plus the constant's own map, which the caller adds). It holds
wherever the optimal value is differentiable (unique duals); elsewhere it is the gradient at
the duals the solver returned, one element of the superdifferential.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.integer]


def quadratic_weights(P_rows: IndexArray, P_cols: IndexArray) -> FloatArray:
    """∂(½xᵀPx)/∂(P upper entry) = w · x_r x_c with w = ½ on the diagonal, 1 above it (an
    upper entry stands for itself and its mirror)."""
    return np.where(P_rows == P_cols, 0.5, 1.0)[:, None]


def canonical_value(x: FloatArray, P_data: FloatArray | None, c: FloatArray,
                    patterns: tuple[IndexArray, IndexArray, IndexArray, IndexArray]) -> FloatArray:
    """cᵀx + ½xᵀPx per element, without the constant: x (n, B); P data and c (rows, B or 1)."""
    value = np.einsum("ib,ib->b", np.broadcast_to(c, x.shape), x)
    P_rows, P_cols = patterns[0], patterns[1]
    if P_data is not None and P_rows.size:
        value = value + np.sum(quadratic_weights(P_rows, P_cols) * P_data * x[P_rows] * x[P_cols],
                               axis=0)
    return value


def data_cotangents(x: FloatArray, y: FloatArray, with_P: bool,
                    patterns: tuple[IndexArray, IndexArray, IndexArray, IndexArray]
                    ) -> tuple[FloatArray | None, FloatArray, FloatArray, FloatArray]:
    """(gP, gA, gb, gc), each (rows, B): the optimal value's gradient on the data, in data
    order (P's upper pattern, A's pattern); x (n, B), y (m, B)."""
    P_rows, P_cols, A_rows, A_cols = patterns
    gP = quadratic_weights(P_rows, P_cols) * x[P_rows] * x[P_cols] if with_P else None
    return gP, y[A_rows] * x[A_cols], -y, x.copy()
