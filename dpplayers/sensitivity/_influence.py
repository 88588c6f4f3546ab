"""Influence of training points on a fitted model, through per-sample weights.

The user writes the loss with a weight per sample, ``w = cp.Parameter(N, nonneg=True)``,
multiplying a parameter-free loss term (introduce residual or margin variables,
``r == y - X @ beta``, so that DPP holds when the data are parameters too). Then:

- the infinitesimal influence of point i on the coefficients θ is ∂θ*/∂wᵢ, read off one
  factorisation at the full fit (the rows of d θ / d w);
- the leave-one-out change it predicts is θ₍₋ᵢ₎ − θ ≈ −∂θ*/∂wᵢ · wᵢ (first order);
- the exact leave-one-out change solves all N problems with wᵢ = 0: by chord iterations
  from the full fit's factorisation, each refit certified by its own KKT residual
  (:mod:`._loo`), the others by one batched conic solve warm-started from the full fit; and
  it flags the points whose removal changes the active set (where the first-order
  prediction cannot be trusted).

Summary columns follow the regression-diagnostics convention: ``dfb_<coef>`` is θ − θ₍₋ᵢ₎
(the full fit minus the fit without point i), the negative of the change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from .._labels.blocks import Sensitivity, label, sensitivity
from .._labels.optional import require
from .._labels.plots import predicted_vs_actual
from .._labels.resolve import output_position, parameter_position, parameter_values
from .._program import CompiledProblem, compile
from ..errors import ParameterError, quoted_name
from ._active import changed
from ._loo import ChordRefits, LeaveOneOutFits, chord_refits

if TYPE_CHECKING:
    from .._program import CompiledProblem
    from .._solution import Solution

FloatArray = npt.NDArray[np.float64]
#: Default solver for a problem compiled here. A zero weight leaves the removed point's
#: epigraph variables free of cost; an interior-point method (Clarabel) then drives them
#: towards infinity and stops with coefficient errors of ~1e-5 on exponential cones
#: (logistic loss) at eps 1e-10, while SCS (ADMM) reaches ~1e-11 there.
DEFAULT_SOLVER = "SCS"
DEFAULT_SOLVER_ARGS = {"eps": 1e-10}
#: Active-set flags compare the full fit with fits where wᵢ is scaled by this (not 0): at
#: wᵢ = 0 point i's own cone rows lose their multipliers in every case (a change that says
#: nothing), while a change on the way from wᵢ to this small weight is a real one.
FLAG_WEIGHT = 1e-3
REFITS = ("chord", "solve")


@dataclass(frozen=True)
class Influence:
    """Per training point i (rows) and coefficient entry (columns, ``labels``).

    Attributes:
        labels: "beta[0]", ... one per flattened coefficient entry.
        coefficients: θ at the full fit.
        weights: w at the full fit.
        derivative: ∂θ/∂wᵢ, (N, p).
        predicted_change: first-order θ₍₋ᵢ₎ − θ = −wᵢ ∂θ/∂wᵢ, (N, p).
        exact_change: θ₍₋ᵢ₎ − θ by re-solving (``exact=True``), else None.
        active_set_changed: per point, whether the active set changes on the way from wᵢ
            to ~0 (``exact`` with ``flag``; see ``FLAG_WEIGHT``), else None.
        leverage: ∂ŷᵢ/∂yᵢ where features and response were given (the hat diagonal for
            least squares), else None.
        cooks_distance: ‖X (θ₍₋ᵢ₎ − θ)‖² / (p s²) with s² = ‖y − ŷ‖²/(N − p) where features
            and response were given (Cook's distance for least squares); else
            Δθᵢᵀ V⁻¹ Δθᵢ / p with V the jackknife covariance of θ.
        solution, loo_solution: the full fit and the refits (a :class:`LeaveOneOutFits` from
            chord refits, else the batched Solution; None without ``exact``).
    """

    labels: tuple[str, ...]
    coefficients: FloatArray
    weights: FloatArray
    derivative: FloatArray
    predicted_change: FloatArray
    exact_change: FloatArray | None
    active_set_changed: npt.NDArray[np.bool_] | None
    leverage: FloatArray | None
    cooks_distance: FloatArray
    solution: Any
    loo_solution: Any

    @property
    def change(self) -> FloatArray:
        """The exact change where computed, else the first-order prediction."""
        return self.exact_change if self.exact_change is not None else self.predicted_change

    @property
    def dfbeta(self) -> FloatArray:
        """θ − θ₍₋ᵢ₎ per point (regression diagnostics' sign)."""
        return -self.change

    def summary(self) -> Any:
        """A pandas DataFrame, one row per point: ``dfb_<coef>``, ``cooks_d``, ``leverage``
        (where defined), ``influence`` (‖∂θ/∂wᵢ‖) and ``active_set_changed`` (exact only)."""
        pd = require("pandas")
        frame = pd.DataFrame(self.dfbeta, columns=[f"dfb_{n}" for n in self.labels])
        frame["cooks_d"] = self.cooks_distance
        if self.leverage is not None:
            frame["leverage"] = self.leverage
        frame["influence"] = np.linalg.norm(self.derivative, axis=1)
        if self.active_set_changed is not None:
            frame["active_set_changed"] = self.active_set_changed
        frame.index.name = "point"
        return frame

    def plot(self, ax: Any = None) -> Any:
        """Predicted vs exact leave-one-out changes (needs ``exact=True``)."""
        if self.exact_change is None:
            raise ValueError("plot() compares with exact refits: call influence(..., exact=True).")
        flags = np.repeat(self.active_set_changed[:, None], self.exact_change.shape[1], axis=1)
        return predicted_vs_actual(self.predicted_change, self.exact_change, flags, ax=ax)


def influence(model: cp.Problem | CompiledProblem, weights: cp.Parameter | str, coefficients: Sequence[Any] | Any,
              values: Mapping | Sequence | None = None, *, exact: bool = False, flag: bool = True,
              features: Any = None, response: Any = None, intercept: Any = None,
              solver: str = DEFAULT_SOLVER, solver_args: dict | None = None,
              executor: Any = None, chunksize: int | None = None,
              refit: str = "chord") -> Influence:
    """Influence of each training point on the fitted coefficients.

    Args:
        model: a ``cp.Problem`` (compiled here with ``solver``, returning ``coefficients``)
            or a :class:`~dpplayers.CompiledProblem` that returns them.
        weights: the per-sample weight parameter (shape (N,)).
        coefficients: the fitted variables (cvxpy Variables; output names too with a
            CompiledProblem).
        values: parameter values (sequence in the program's order, a mapping keyed by
            Parameter or name), default each parameter's ``.value``.
        exact: also refit without each point, exactly (see ``refit``).
        flag: with ``exact``, also flag the points whose removal changes the active set
            (a second batch of N, with wᵢ scaled by ``FLAG_WEIGHT``).
        features, response: the data matrix X (N, d) and response y (N,) of a model whose
            prediction is ŷ = X θ₀ (+ intercept), θ₀ the first coefficient: a Parameter
            (its value is read from ``values``) or an array. The response must be a
            Parameter for leverage. Both enable leverage and Cook's distance.
        intercept: a scalar coefficient added to the prediction (one of ``coefficients``).
        solver: for a ``cp.Problem`` (default SCS, see ``DEFAULT_SOLVER``).
        solver_args: for every solve (default tight: ``{"eps": 1e-10}``).
        executor, chunksize: run the ``exact`` refits (the batches of N) on an executor or
            Dask client, in chunks (see :meth:`~dpplayers.CompiledProblem.solve`).
        refit: how ``exact`` refits: ``"chord"`` (default) runs chord iterations on every
            refit's KKT residual from the full fit's factorisation, all N together
            (:mod:`dpplayers.sensitivity._loo`), returns a refit only where its own KKT
            residual is below 1e-9 relative, and solves the others (and every refit of a
            program it does not apply to) as ``"solve"`` does: one batched conic solve of
            the N problems, warm-started from the full fit.

    Raises:
        ParameterError: ``weights`` is not a parameter of the problem or not a vector.
        VariableError: a coefficient the compiled program does not return.
    """
    if refit not in REFITS:
        raise ValueError(f"refit must be one of {REFITS}, got {refit!r}.")
    prog = _compiled(model, coefficients, solver)
    coefs = [output_position(prog, c) for c in _as_list(coefficients)]
    w_at = _weights_position(prog, weights)
    vals = parameter_values(prog, values)
    args = dict(DEFAULT_SOLVER_ARGS if solver_args is None else solver_args)
    sol = prog.solve(*vals, solver_args=args)
    y_at = parameter_position(prog, response, "response") if isinstance(
        response, (cp.Parameter, str)) else None
    wrt = [w_at] + ([y_at] if y_at is not None and features is not None else [])
    sens = sensitivity(sol, of=coefs, wrt=wrt)
    theta = np.concatenate([np.ravel(sol.values[i]) for i in coefs])
    n_points = vals[w_at].shape[0]
    D = _stack_rows(sens, 0, n_points)  # (N, p)
    w = vals[w_at]
    predicted = -D * w[:, None]
    run = {"executor": executor, "chunksize": chunksize}
    loo, exact_change, flags = (_exact(prog, sol, vals, w_at, coefs, theta, args, flag, run,
                                       refit == "chord")
                                if exact else (None, None, None))
    change = exact_change if exact_change is not None else predicted
    X = _value(prog, features, vals)
    lev = None
    if X is not None and y_at is not None:
        lev = _leverage(X, _stack_rows(sens, 1, n_points), sens, intercept, prog, coefs)
    if X is not None and response is not None:
        cooks = _cooks(X, _value(prog, response, vals), change, theta, sens, intercept, prog,
                       coefs)
    else:
        cooks = _jackknife_distance(change)
    labels = tuple(label(sens.outputs[a], i) for a in range(len(coefs))
                   for i in np.ndindex(sens.output_shapes[a]))
    return Influence(labels, theta, w, D, predicted, exact_change, flags, lev, cooks, sol, loo)


def _exact(prog: CompiledProblem, sol: Solution, vals: list[FloatArray], w_at: int, coefs: list[int],
           theta: FloatArray, args: dict, flag: bool,
           run: dict[str, Any], chord: bool) -> tuple[Any, FloatArray, Any]:
    """The refits, their changes, and (``flag``) the active-set flags; ``run``: where to
    solve them (``executor``, ``chunksize``); ``chord``: refit by chord iterations where
    they apply and certify."""
    loo, change = _refits(prog, sol, vals, w_at, coefs, theta, args, 0.0, run, chord)
    if not flag:
        return loo, change, None
    near, _ = _refits(prog, sol, vals, w_at, coefs, theta, args, FLAG_WEIGHT, run)
    return loo, change, changed(sol, near)


def _as_list(items: Any) -> list[Any]:
    return list(items) if isinstance(items, (list, tuple)) else [items]


def _compiled(model: Any, coefficients: Any, solver: str) -> Any:
    if isinstance(model, cp.Problem):
        return compile(model, parameters=model.parameters(),
                                variables=_as_list(coefficients), solver=solver)
    if not isinstance(model, CompiledProblem):
        raise TypeError(f"model must be a cp.Problem or a CompiledProblem, got "
                        f"{type(model).__name__}.")
    return model


def _weights_position(prog: CompiledProblem, weights: Any) -> int:
    if isinstance(weights, cp.Parameter) and all(
            p.id != weights.id for p in prog.problem.parameters()):
        raise ParameterError(f"weights: parameter {quoted_name(weights)} (shape "
                             f"{tuple(weights.shape)}) does not enter the problem; write the "
                             "loss as weights @ per_sample_loss.")
    at = parameter_position(prog, weights, "weights")
    if len(prog.layout.specs[at].shape) != 1:
        raise ParameterError(f"weights: {prog.layout.specs[at].label} must be a vector (one "
                             f"weight per sample), got shape {prog.layout.specs[at].shape}.")
    return at


def _stack_rows(sens: Sensitivity, b: int, n_points: int) -> FloatArray:
    """d θ / d (vector parameter b) as (N, p): one row per sample."""
    return np.concatenate([blk[b].reshape(-1, n_points).T for blk in sens.blocks], axis=1)


def _refits(prog: CompiledProblem, sol: Solution, vals: list[FloatArray], w_at: int, coefs: list[int],
            theta: FloatArray, args: dict, keep: float,
            run: dict[str, Any], chord: bool = False) -> tuple[Any, FloatArray]:
    """All N leave-one-out fits (weight i scaled by ``keep``, 0: removed): with ``chord``
    and keep = 0, by chord iterations where they apply (:func:`_with_fallback`), else as one
    batched conic solve warm-started from the full fit."""
    w = vals[w_at]
    if keep == 0.0 and chord and not prog.gp and sol.batch is None and sol.mode == "direct":
        fits = chord_refits(prog, sol, prog.layout.specs[w_at].offset, w)
        if fits is not None:
            return _with_fallback(prog, sol, vals, w_at, coefs, theta, args, run, fits)
    loo = _solve_refits(prog, sol, vals, w_at, np.arange(w.size), keep, args, run)
    fitted = np.concatenate([loo.values[i].reshape(w.shape[0], -1) for i in coefs], axis=1)
    return loo, fitted - theta[None, :]


def _solve_refits(prog: CompiledProblem, sol: Solution, vals: list[FloatArray], w_at: int,
                  points: npt.NDArray[np.intp], keep: float, args: dict,
                  run: dict[str, Any]) -> Solution:
    """The refits of ``points`` as one batched conic solve (weight i scaled by ``keep`` in
    element i), warm-started from the full fit."""
    w = vals[w_at]
    W = np.repeat(w[None, :], points.size, axis=0)
    W[np.arange(points.size), points] = keep * w[points]
    batch = list(vals)
    batch[w_at] = W
    return prog.solve(*batch, solver_args=args, warm_start=sol, on_failure="nan", **run)


def _with_fallback(prog: CompiledProblem, sol: Solution, vals: list[FloatArray], w_at: int,
                   coefs: list[int], theta: FloatArray, args: dict, run: dict[str, Any],
                   fits: ChordRefits) -> tuple[LeaveOneOutFits, FloatArray]:
    """Chord refits where certified exact, the conic batch solve for the others."""
    values = [np.array(v) for v in prog.retrieval.apply(fits.x, fits.y)]
    info = [{"method": "chord", "iterations": int(k), "residual": float(r)}
            for k, r in zip(fits.iterations, fits.residual)]
    rest = np.flatnonzero(~fits.exact)
    solved = None
    if rest.size:
        solved = _solve_refits(prog, sol, vals, w_at, rest, 0.0, args, run)
        for v, new in zip(values, solved.values):
            v[rest] = new
        for a, i in enumerate(rest):
            info[i] = {"method": "solve", **solved.info[a]}
    n_points = fits.x.shape[1]
    fitted = np.concatenate([values[i].reshape(n_points, -1) for i in coefs], axis=1)
    loo = LeaveOneOutFits(tuple(values), tuple(info), n_points, fits, solved)
    return loo, fitted - theta[None, :]


def _value(prog: CompiledProblem, item: Any, vals: list[FloatArray]) -> FloatArray | None:
    if item is None:
        return None
    if isinstance(item, (cp.Parameter, str)):
        return vals[parameter_position(prog, item, "features/response")]
    return np.asarray(item, dtype=np.float64)


def _prediction_rows(X: FloatArray, sens: Sensitivity, intercept: Any, prog: CompiledProblem,
                     coefs: list[int]) -> tuple[int, int | None]:
    """Where θ₀ (X's coefficients) and the intercept sit in the flattened θ."""
    if int(np.prod(sens.output_shapes[0])) != X.shape[1]:
        raise ParameterError(f"features: {X.shape[1]} columns, but the first coefficient "
                             f"'{sens.outputs[0]}' has shape {sens.output_shapes[0]}.")
    if intercept is None:
        return X.shape[1], None
    at = coefs.index(output_position(prog, intercept))
    return X.shape[1], sum(int(np.prod(s)) for s in sens.output_shapes[:at])


def _leverage(X: FloatArray, dtheta_dy: FloatArray, sens: Sensitivity, intercept: Any, prog: CompiledProblem,
              coefs: list[int]) -> FloatArray:
    """hᵢ = ∂ŷᵢ/∂yᵢ = xᵢᵀ ∂θ₀/∂yᵢ (+ ∂b/∂yᵢ)."""
    d, b = _prediction_rows(X, sens, intercept, prog, coefs)
    h = np.einsum("ij,ij->i", X, dtheta_dy[:, :d])
    return h + dtheta_dy[:, b] if b is not None else h


def _cooks(X: FloatArray, y: FloatArray, delta: FloatArray, theta: FloatArray, sens: Sensitivity,
           intercept: Any, prog: CompiledProblem, coefs: list[int]) -> FloatArray:
    """‖X Δθ₀ (+ Δb)‖² / (p s²), s² the residual variance of the full fit."""
    d, b = _prediction_rows(X, sens, intercept, prog, coefs)
    shift = delta[:, :d] @ X.T + (delta[:, b][:, None] if b is not None else 0.0)  # (N, N)
    fitted = X @ theta[:d] + (theta[b] if b is not None else 0.0)
    p = theta.size
    s2 = float(np.sum((y - fitted) ** 2)) / max(X.shape[0] - p, 1)
    return np.sum(shift**2, axis=1) / (p * s2)


def _jackknife_distance(delta: FloatArray) -> FloatArray:
    """Δθᵢᵀ V⁻¹ Δθᵢ / p, V = (N−1)/N Σ (Δθᵢ − mean)(Δθᵢ − mean)ᵀ (pseudo-inverse)."""
    n, p = delta.shape
    centred = delta - delta.mean(axis=0)
    V = (n - 1) / n * centred.T @ centred
    return np.einsum("ij,jk,ik->i", delta, np.linalg.pinv(V), delta) / p
