"""Sensitivity analysis of solved programs and fitted models, on the public Solution API.

    sens = sol.sensitivity(of=[beta], wrt=[w])      # labelled exact Jacobian blocks
    sens.to_frame(); sens.top(10); sens.heatmap(); sens.tornado()
    inf = dpplayers.influence(problem, weights=w, coefficients=[beta], exact=True)
    inf.summary()                                   # dfb_<coef>, cooks_d, leverage, flags
    dpplayers.sensitivity.data_sensitivity(sol, X, [beta])   # ∂θ/∂xᵢ per point
    dpplayers.sensitivity.validate(prog, values)    # first order vs re-solves
    dpplayers.sensitivity.path(prog, lam, grid)     # one batched sweep with tangents

Everything here goes through ``CompiledProblem.solve`` and ``Solution.vjp/jvp/jacobian``
(and reads the canonical ``y``, ``s`` and cone sizes for active sets): no derivative is
re-derived.
"""

from .._labels.blocks import Sensitivity as Sensitivity
from .._labels.blocks import sensitivity as sensitivity
from ._active import regimes as regimes
from ._data import data_sensitivity as data_sensitivity
from ._influence import Influence as Influence
from ._influence import influence as influence
from ._paths import Path as Path
from ._paths import path as path
from ._validate import Validation as Validation
from ._validate import validate as validate

__all__ = ["Influence", "Path", "Sensitivity", "Validation", "data_sensitivity", "influence",
           "path", "regimes", "sensitivity", "validate"]
