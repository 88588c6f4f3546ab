"""First-order predictions checked against re-solves, over a range of step sizes.

For a random direction d in the parameters (scaled to each parameter's size, keeping sign
and PSD attributes for small steps) the prediction x(θ + h d) − x(θ) ≈ h Jd (one jvp) is
compared with tight re-solves at θ ± h d, all steps in one batch. The one-sided error
falls like h (curvature), the central one like h², until the solver's own error δ takes
over: δ is estimated from the second differences x(θ+hd) − 2x(θ) + x(θ−hd) at the two
smallest steps with their h² curvature cancelled, and ``noise_floor`` is δ/(h‖Jd‖), the
relative error re-solves cannot beat at step h.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from .._labels.blocks import as_list, output_index
from .._labels.optional import require
from .._labels.plots import predicted_vs_actual
from .._labels.resolve import parameter_position, parameter_values
from .._program import CompiledProblem, compile
from ._active import changed

if TYPE_CHECKING:
    from .._compile.parameters import ParameterSpec
    from .._program import CompiledProblem

FloatArray = npt.NDArray[np.float64]
DEFAULT_STEPS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
#: Tight tolerances and Newton polishing: the noise floor is the solver's error over h.
DEFAULT_SOLVER_ARGS = {"eps": 1e-10, "refine": 2}


@dataclass(frozen=True)
class Validation:
    """Predicted vs actual changes per step (rows follow ``steps``; K output entries)."""

    steps: FloatArray
    tangent: FloatArray  # Jd, (K,)
    predicted: FloatArray  # h Jd, (S, K)
    actual: FloatArray  # x(θ + h d) − x(θ), (S, K)
    central: FloatArray  # (x(θ + h d) − x(θ − h d)) / 2, (S, K)
    absolute_error: FloatArray  # ‖actual − predicted‖, (S,)
    relative_error: FloatArray  # ‖actual − predicted‖ / max(‖predicted‖, ‖actual‖), (S,)
    central_error: FloatArray  # ‖central − predicted‖ / max(‖predicted‖, ‖central‖), (S,)
    correlation: FloatArray  # of predicted and actual entries, (S,)
    noise_floor: FloatArray  # δ / (h ‖Jd‖), (S,)
    active_set_changed: npt.NDArray[np.bool_]  # at θ + h d or θ − h d, (S,)

    @property
    def best_error(self) -> float:
        """The smallest central relative error over the steps."""
        return float(np.nanmin(self.central_error))

    def to_frame(self) -> Any:
        """One row per step (needs pandas)."""
        pd = require("pandas")
        return pd.DataFrame({
            "step": self.steps, "predicted_norm": np.linalg.norm(self.predicted, axis=1),
            "actual_norm": np.linalg.norm(self.actual, axis=1),
            "absolute_error": self.absolute_error, "relative_error": self.relative_error,
            "central_error": self.central_error,
            "correlation": self.correlation, "noise_floor": self.noise_floor,
            "active_set_changed": self.active_set_changed})

    def plot(self, ax: Any = None) -> Any:
        """Predicted vs actual changes, every step on one scatter (each scaled by 1/h)."""
        scale = 1.0 / self.steps[:, None]
        flags = np.repeat(self.active_set_changed[:, None], self.actual.shape[1], axis=1)
        return predicted_vs_actual(self.predicted * scale, self.actual * scale, flags, ax=ax)


def validate(model: cp.Problem | CompiledProblem, values: Mapping | Sequence | None = None, *, of: Any = None,
             wrt: Any = None, steps: Sequence[float] = DEFAULT_STEPS, seed: int = 0,
             solver: str = "CLARABEL", solver_args: dict | None = None) -> Validation:
    """Compare first-order predictions with re-solves along a random direction.

    Args:
        model: a :class:`~dpplayers.CompiledProblem` (or a ``cp.Problem``, compiled here
            with ``solver`` returning all its variables).
        values: parameter values (sequence in order, mapping, or default ``.value``).
        of: outputs to compare (default all); wrt: parameters to perturb (default all).
        steps: relative step sizes h (each parameter's direction has its value's norm).
        seed: for the random direction.
        solver_args: for every solve (default ``{"eps": 1e-10, "refine": 2}``).
    """
    prog = model if isinstance(model, CompiledProblem) else compile(
        model, solver=solver) if isinstance(model, cp.Problem) else _refuse(model)
    vals = parameter_values(prog, values)
    outs = [output_index(prog, o) for o in as_list(of, len(prog.retrieval.outputs))]
    params = [p if isinstance(p, int) else parameter_position(prog, p)
              for p in as_list(wrt, len(prog.layout.specs))]
    args = dict(DEFAULT_SOLVER_ARGS if solver_args is None else solver_args)
    rng = np.random.default_rng(seed)
    directions = {j: _direction(prog.layout.specs[j], vals[j], rng) for j in params}
    sol = prog.solve(*vals, solver_args=args)
    tangents = [directions.get(j) for j in range(len(vals))]
    t = _flat(sol.jvp(*tangents), outs, None)
    h = np.asarray(steps, dtype=np.float64)
    signed = np.concatenate([h, -h])
    batch = [np.stack([v + s * directions[j] for s in signed]) if j in directions else v
             for j, v in enumerate(vals)]
    moved = prog.solve(*batch, solver_args=args, warm_start=sol, on_failure="nan")
    x0 = _flat(sol.values, outs, None)
    xs = _flat(moved.values, outs, len(signed))
    plus, minus = xs[: len(h)], xs[len(h):]
    return _compare(h, t, x0, plus, minus, changed(sol, moved).reshape(2, -1).any(axis=0))


def _refuse(model: Any) -> Any:
    raise TypeError(f"model must be a CompiledProblem or a cp.Problem, got {type(model).__name__}.")


def _direction(spec: ParameterSpec, value: FloatArray, rng: np.random.Generator) -> FloatArray:
    """A random direction with ‖d‖ = ‖value‖ (1 for a zero value) that small steps keep
    inside the parameter's attributes: relative for sign-constrained entries, symmetric
    for symmetric/PSD/NSD matrices."""
    u = rng.standard_normal(spec.shape)
    if spec.nonneg or spec.pos or spec.nonpos or spec.neg or spec.logged:
        u = u * np.abs(value)
    if spec.symmetric or spec.psd or spec.nsd:
        u = (u + u.T) / 2
    norm_u, norm_v = np.linalg.norm(u), np.linalg.norm(value)
    return u * ((norm_v or 1.0) / norm_u) if norm_u > 0 else u


def _flat(values: Sequence[FloatArray], outs: Sequence[int], batch: int | None) -> FloatArray:
    if batch is None:
        return np.concatenate([np.ravel(values[i]) for i in outs])
    return np.concatenate([np.reshape(values[i], (batch, -1)) for i in outs], axis=1)


def _compare(h: FloatArray, t: FloatArray, x0: FloatArray, plus: FloatArray,
             minus: FloatArray, flags: npt.NDArray[np.bool_]) -> Validation:
    predicted = h[:, None] * t[None, :]
    actual, central = plus - x0, (plus - minus) / 2
    norm_p = np.linalg.norm(predicted, axis=1)
    err = np.linalg.norm(actual - predicted, axis=1)
    rel = err / _scale(norm_p, np.linalg.norm(actual, axis=1))
    cen = np.linalg.norm(central - predicted, axis=1) / _scale(norm_p,
                                                               np.linalg.norm(central, axis=1))
    corr = np.array([_correlation(p, a) for p, a in zip(predicted, actual)])
    delta = _noise(h, plus - 2 * x0 + minus)
    return Validation(h, t, predicted, actual, central, err, rel, cen, corr,
                      delta / _scale(norm_p, norm_p), flags)


def _noise(h: FloatArray, second: FloatArray) -> float:
    """The re-solves' error δ from second differences D(h) = x(θ+hd) − 2x(θ) + x(θ−hd)
    = c h² + noise: at the two smallest steps h₁ < h₂ the curvature cancels in
    (D(h₁) h₂² − D(h₂) h₁²) / (h₂² − h₁²); with one step, D(h)/2 bounds it."""
    order = np.argsort(h)
    if h.size < 2:
        return float(np.linalg.norm(second[order[0]]) / 2)
    (h1, h2), (d1, d2) = h[order[:2]], second[order[:2]]
    return float(np.linalg.norm((d1 * h2**2 - d2 * h1**2) / (h2**2 - h1**2)) / 2)


def _scale(a: FloatArray, b: FloatArray) -> FloatArray:
    """The larger of two norms (a change that is zero on both sides has error 0 / tiny)."""
    return np.maximum(np.maximum(a, b), np.finfo(float).tiny)


def _correlation(a: FloatArray, b: FloatArray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0 or not np.all(np.isfinite(b)):
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
