"""A parameter swept over a grid: one batched solve, exact tangents, active-set changes.

The parameter takes the value λ (in every entry) at each grid point; the tangent
d x*/dλ at every point comes from one jvp on the batched solution (a tangent of ones on
that parameter). Between consecutive points whose active sets differ the path has a kink
(lasso's knots, a portfolio's assets entering or leaving): the tangents on either side
differ, and those intervals are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from .._labels.blocks import as_list, label, output_index
from .._labels.optional import require
from .._labels.resolve import parameter_position, parameter_values
from .._program import CompiledProblem, compile
from ._active import regimes

if TYPE_CHECKING:
    from .._program import CompiledProblem

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Path:
    """Solutions and tangents along ``grid`` for the parameter ``parameter``.

    ``values[i]`` and ``tangents[i]`` have shape (G, *output_shapes[i]); ``changes[k]`` says
    whether the active set differs between grid points k and k + 1.
    """

    parameter: str
    grid: FloatArray
    outputs: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    values: tuple[FloatArray, ...]
    tangents: tuple[FloatArray, ...]
    active_sets: npt.NDArray[np.int8]
    changes: npt.NDArray[np.bool_]
    solution: Any

    @property
    def breakpoints(self) -> list[tuple[float, float]]:
        """Grid intervals in which the active set changes."""
        return [(float(self.grid[k]), float(self.grid[k + 1]))
                for k in np.flatnonzero(self.changes)]

    def to_frame(self) -> Any:
        """Long DataFrame: grid value, output entry, value, tangent (needs pandas)."""
        pd = require("pandas")
        rows = []
        for i, (name, shape) in enumerate(zip(self.outputs, self.output_shapes)):
            for k, g in enumerate(self.grid):
                for e in np.ndindex(shape):
                    rows.append((float(g), label(name, e), float(self.values[i][k][e]),
                                 float(self.tangents[i][k][e])))
        return pd.DataFrame(rows, columns=[self.parameter, "output", "value", "tangent"])

    def plot(self, output: int = 0, ax: Any = None, tangents: bool = False) -> Any:
        """Each entry of one output along the grid; dotted lines at active-set changes and,
        with ``tangents``, the tangent at every grid point as a short segment (±40% of the
        local grid spacing, so it reads on linear and log axes alike)."""
        plt = require("matplotlib.pyplot")
        ax = ax if ax is not None else plt.subplots()[1]
        vals = self.values[output].reshape(len(self.grid), -1)
        tans = self.tangents[output].reshape(len(self.grid), -1)
        ax.plot(self.grid, vals)
        if tangents and len(self.grid) > 1:
            gaps = np.abs(np.diff(self.grid))
            half = 0.4 * np.minimum(np.r_[gaps[0], gaps], np.r_[gaps, gaps[-1]])
            for k, g in enumerate(self.grid):
                xs = np.array([g - half[k], g + half[k]])
                ax.plot(xs, vals[k][None, :] + np.outer(xs - g, tans[k]), "k-", linewidth=0.6)
        for lo, hi in self.breakpoints:
            ax.axvline((lo + hi) / 2, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel(self.parameter)
        ax.set_ylabel(self.outputs[output])
        return ax


def path(model: cp.Problem | CompiledProblem, parameter: cp.Parameter | str, grid: Sequence[float],
         values: Mapping | Sequence | None = None, *, of: Any = None, solver: str = "CLARABEL",
         solver_args: dict | None = None, executor: Any = None,
         chunksize: int | None = None) -> Path:
    """Solve along ``grid`` for ``parameter`` (one batch) with exact tangents.

    Args:
        model: a :class:`~dpplayers.CompiledProblem` or a ``cp.Problem`` (compiled here).
        parameter: the swept parameter; it takes the value λ in every entry.
        grid: the λ values (1-D).
        values: the other parameters' values (the swept one's is ignored).
        of: outputs to report (default all requested).
        solver_args: for the batched solve (default ``{"eps": 1e-10}``).
        executor, chunksize: solve the grid and take its tangents on an executor or Dask
            client, in chunks (see :meth:`~dpplayers.CompiledProblem.solve`).
    """
    prog = model if isinstance(model, CompiledProblem) else compile(
        model, solver=solver)
    at = parameter_position(prog, parameter, "parameter")
    vals = _values_except(prog, values, at)
    spec = prog.layout.specs[at]
    lam = np.asarray(grid, dtype=np.float64).ravel()
    vals[at] = lam.reshape(-1, *([1] * len(spec.shape))) * np.ones((1, *spec.shape))
    args = dict({"eps": 1e-10} if solver_args is None else solver_args)
    tangents: list[Any] = [None] * len(vals)
    tangents[at] = np.ones(spec.shape)
    sol, dx = prog.solve_and_jvp(*vals, tangents=tangents, solver_args=args, on_failure="nan",
                                 executor=executor, chunksize=chunksize)
    outs = [output_index(prog, o) for o in as_list(of, len(prog.retrieval.outputs))]
    codes = regimes(sol)
    return Path(spec.name, lam, tuple(prog.retrieval.outputs[i].name for i in outs),
                tuple(prog.retrieval.outputs[i].shape for i in outs),
                tuple(sol.values[i] for i in outs), tuple(dx[i] for i in outs), codes,
                (codes[1:] != codes[:-1]).any(axis=1), sol)


def _values_except(prog: CompiledProblem, values: Any, at: int) -> list[Any]:
    """Values for every parameter; the swept one may be missing (it is set per point)."""
    if isinstance(values, Mapping) or values is None:
        given = dict(values or {})
        spec = prog.layout.specs[at]
        if not any(_is(prog, k, at) for k in given):
            given[spec.name] = np.zeros(spec.shape)
        if values is None:
            for p in prog.problem.parameters():
                if parameter_position(prog, p, "values") != at:
                    given[p] = p.value
        return list(parameter_values(prog, given))
    return list(parameter_values(prog, values))


def _is(prog: CompiledProblem, key: Any, at: int) -> bool:
    return parameter_position(prog, key, "values") == at
