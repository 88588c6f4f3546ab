"""Sensitivity of fitted coefficients to each training point's features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from .._labels.blocks import sensitivity
from ..errors import ParameterError

if TYPE_CHECKING:
    from .._solution import Solution

FloatArray = npt.NDArray[np.float64]


def data_sensitivity(sol: Solution, features: cp.Parameter | str,
                     coefficients: Sequence[Any] | Any) -> FloatArray:
    """∂θ*/∂xᵢ for every training point: shape (N, d, p), entry [i, k, j] = ∂θⱼ/∂X[i, k].

    ``features`` is the data matrix parameter X (N, d) of a solved program; θ is the
    flattened ``coefficients``. These are the arrows of the "how each point pulls the fit"
    picture: moving point i by δ moves θ by about Σₖ δₖ [i, k, :].
    """
    coefs = list(coefficients) if isinstance(coefficients, (list, tuple)) else [coefficients]
    sens = sensitivity(sol, of=coefs, wrt=[features])
    shape = sens.parameter_shapes[0]
    if len(shape) != 2:
        raise ParameterError(f"features: '{sens.parameters[0]}' must be a matrix (N, d), "
                             f"got shape {shape}.")
    n, d = shape
    return np.concatenate([blk[0].reshape(-1, n, d).transpose(1, 2, 0) for blk in sens.blocks],
                          axis=2)
