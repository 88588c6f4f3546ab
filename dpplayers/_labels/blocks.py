"""Labelled Jacobian blocks d(output)/d(parameter) of a solved program.

The numbers come from the Solution's own ``vjp``, ``jvp`` or ``jacobian`` (never re-derived
here); this module picks the cheapest of them for the blocks asked for and names every entry
by output, parameter and index tuple.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from ..errors import DerivativeError
from .optional import require
from .plots import heatmap, tornado
from .resolve import output_position, parameter_position

if TYPE_CHECKING:
    from .._program import CompiledProblem
    from .._solution import Solution

FloatArray = npt.NDArray[np.float64]
#: Use ``Solution.jacobian()`` (one multi-column solve for every output and parameter) when
#: its columns are at most this many times the columns the requested blocks need; otherwise
#: one ``vjp`` per output entry or one ``jvp`` per parameter entry, whichever are fewer.
JACOBIAN_SLACK = 4
OBJECTIVE_NAMES = ("objective", "value")


@dataclass(frozen=True)
class Sensitivity:
    """Exact Jacobian blocks with labels.

    ``blocks[i][j]`` is d outputs[i] / d parameters[j], shape ([B,] *output_shapes[i],
    *parameter_shapes[j]) (a leading batch axis iff the solution had one). ``method`` says
    how it was computed: "jacobian", "reverse" (vjp rows) or "forward" (jvp columns).
    """

    outputs: tuple[str, ...]
    parameters: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    parameter_shapes: tuple[tuple[int, ...], ...]
    blocks: tuple[tuple[FloatArray, ...], ...]
    batch: int | None
    method: str

    def block(self, of: str, wrt: str) -> FloatArray:
        """The block d ``of`` / d ``wrt``, both by name."""
        if of not in self.outputs or wrt not in self.parameters:
            raise DerivativeError(f"no block d{of}/d{wrt}: outputs {self.outputs}, "
                                  f"parameters {self.parameters}.")
        return self.blocks[self.outputs.index(of)][self.parameters.index(wrt)]

    def entries(self) -> Iterator[tuple[int | None, str, tuple, str, tuple, float]]:
        """(element, output, output index, parameter, parameter index, value) per entry."""
        elements = [None] if self.batch is None else range(self.batch)
        for i, (oname, oshape) in enumerate(zip(self.outputs, self.output_shapes)):
            for j, (pname, pshape) in enumerate(zip(self.parameters, self.parameter_shapes)):
                for k in elements:
                    blk = self.blocks[i][j] if k is None else self.blocks[i][j][k]
                    for oi in np.ndindex(oshape):
                        row = blk[oi]
                        for pi in np.ndindex(pshape):
                            yield k, oname, oi, pname, pi, float(row[pi])

    def to_frame(self) -> Any:
        """A long pandas DataFrame: one row per entry, with its labels (needs pandas)."""
        pd = require("pandas")
        rows = [(k, o, oi, p, pi, label(o, oi), label(p, pi), v)
                for k, o, oi, p, pi, v in self.entries()]
        frame = pd.DataFrame(rows, columns=["element", "output", "output_index", "parameter",
                                            "parameter_index", "of", "wrt", "value"])
        return frame.drop(columns="element") if self.batch is None else frame

    def to_xarray(self) -> Any:
        """An xarray Dataset, one DataArray per block named "d<output>/d<parameter>"."""
        xr = require("xarray")
        data = {}
        for i, o in enumerate(self.outputs):
            for j, p in enumerate(self.parameters):
                dims = ([] if self.batch is None else ["element"]) + [
                    f"{o}_{a}" for a in range(len(self.output_shapes[i]))] + [
                    f"{p}_{a}" for a in range(len(self.parameter_shapes[j]))]
                data[f"d{o}/d{p}"] = xr.DataArray(self.blocks[i][j], dims=dims)
        return xr.Dataset(data)

    def top(self, k: int = 10) -> Any:
        """The k entries largest in magnitude, as a DataFrame sorted by |value|."""
        frame = self.to_frame()
        order = frame["value"].abs().sort_values(ascending=False).index
        return frame.loc[order[:k]].reset_index(drop=True)

    def heatmap(self, of: str | None = None, wrt: str | None = None, element: int = 0,
                ax: Any = None) -> Any:
        """A heatmap of one block (default the first), outputs as rows; returns the Axes."""
        o, p = of or self.outputs[0], wrt or self.parameters[0]
        blk = self.block(o, p)
        blk = blk[element] if self.batch is not None else blk
        oshape = self.output_shapes[self.outputs.index(o)]
        pshape = self.parameter_shapes[self.parameters.index(p)]
        return heatmap(blk.reshape(int(np.prod(oshape)), int(np.prod(pshape))),
                       [label(o, i) for i in np.ndindex(oshape)],
                       [label(p, i) for i in np.ndindex(pshape)], ax=ax)

    def tornado(self, k: int = 15, element: int = 0, ax: Any = None) -> Any:
        """A tornado chart of the k largest entries (bars by signed value); returns the Axes."""
        top = [(f"d{label(o, oi)}/d{label(p, pi)}", v) for kk, o, oi, p, pi, v in self.entries()
               if kk in (None, element)]
        top.sort(key=lambda t: -abs(t[1]))
        return tornado([t[0] for t in top[:k]], np.array([t[1] for t in top[:k]]), ax=ax)


def label(name: str, index: tuple) -> str:
    """"beta[2]", "X[0, 1]", or "t" for a scalar."""
    return name if not index else f"{name}[{', '.join(str(i) for i in index)}]"


def sensitivity(sol: Solution, of: Any = None, wrt: Any = None) -> Sensitivity:
    """Labelled blocks d(of)/d(wrt) of a solved program.

    Args:
        sol: a :class:`~dpplayers.Solution`.
        of: requested variables or constraint duals (cvxpy objects or output names), or the
            optimal value (``"objective"``, ``"value"`` or the problem's ``cp.Minimize`` /
            ``cp.Maximize`` object), one or a list; default all the outputs requested at
            compile time.
        wrt: parameters (cvxpy Parameters or names), one or a list; default all.

    Returns:
        A :class:`Sensitivity`. Fewer output entries than parameter entries: one vjp row per
        output entry; else one jvp column per parameter entry; one ``jacobian()`` call when
        it needs at most ``JACOBIAN_SLACK`` times the columns. Every route reuses the
        solution's factorisation. The objective's block (output ``"objective"``, shape ())
        is :meth:`~dpplayers.Solution.objective_gradient` (the envelope theorem: no solve).

    Raises:
        VariableError: an ``of`` that was not requested at compile time.
        ParameterError: a ``wrt`` that is not a parameter of the program.
        DerivativeError: ``of="objective"`` on a program whose optimal value cannot be
            evaluated (compiled by a version that did not keep the objective's constant).
    """
    prog = sol.program
    items = as_list(of, len(prog.retrieval.outputs))
    objective = [is_objective(prog, o) for o in items]
    outs = [output_index(prog, o) for o, obj in zip(items, objective) if not obj]
    params = [p if isinstance(p, int) else parameter_position(prog, p)
              for p in as_list(wrt, len(prog.layout.specs))]
    blocks, method = _blocks(sol, outs, params) if outs else ((), "objective")
    if any(objective):
        grad = sol.objective_gradient()
        obj_block = tuple(grad[j] for j in params)
        merged, rest = [], iter(blocks)
        for obj in objective:
            merged.append(obj_block if obj else next(rest))
        blocks = tuple(merged)
    ospecs, pspecs = prog.retrieval.outputs, prog.layout.specs
    names = iter(ospecs[i].name for i in outs)
    shapes = iter(ospecs[i].shape for i in outs)
    return Sensitivity(
        outputs=tuple(OBJECTIVE_NAMES[0] if obj else next(names) for obj in objective),
        parameters=tuple(pspecs[j].name for j in params),
        output_shapes=tuple(() if obj else next(shapes) for obj in objective),
        parameter_shapes=tuple(pspecs[j].shape for j in params),
        blocks=blocks, batch=sol.batch, method=method)


def as_list(items: Any, count: int) -> list[Any]:
    """One item or a list of them as a list; None: every position 0 … count − 1."""
    if items is None:
        return list(range(count))
    return list(items) if isinstance(items, (list, tuple)) else [items]


def is_objective(prog: CompiledProblem, item: Any) -> bool:
    """Whether ``item`` asks for the optimal value: "objective"/"value" (unless an output
    has that name) or the problem's own objective object."""
    if isinstance(item, cp.problems.objective.Objective):
        if item is not prog.problem.objective:
            raise DerivativeError(
                "of: a cp.Minimize/cp.Maximize that is not this program's objective; pass "
                "the compiled problem's own (problem.objective) or of='objective'.")
        return True
    return isinstance(item, str) and item in OBJECTIVE_NAMES and all(
        o.name != item for o in prog.retrieval.outputs)


def output_index(prog: CompiledProblem, item: Any) -> int:
    """An output's position: an int as is, else resolved. The objective is not an output
    (``sensitivity`` takes it; validate and path compare outputs only)."""
    if isinstance(item, int):
        return item
    if is_objective(prog, item):
        raise DerivativeError(
            "of='objective': the optimal value is offered by sensitivity() and "
            "Solution.objective_gradient(), not here; pass variables or duals.")
    return output_position(prog, item)


def _blocks(sol: Solution, outs: Sequence[int], params: Sequence[int]
            ) -> tuple[tuple[tuple[FloatArray, ...], ...], str]:
    """blocks[a][b] = d outs[a] / d params[b], computed by the cheapest route."""
    prog = sol.program
    osizes = [o.size for o in prog.retrieval.outputs]
    psizes = [s.size for s in prog.layout.specs]
    want = min(sum(osizes[i] for i in outs), sum(psizes[j] for j in params))
    if min(sum(osizes), sum(psizes)) <= JACOBIAN_SLACK * want:
        jac = sol.jacobian()
        return tuple(tuple(jac[i][j] for j in params) for i in outs), "jacobian"
    if sum(osizes[i] for i in outs) <= sum(psizes[j] for j in params):
        return _reverse(sol, outs, params), "reverse"
    return _forward(sol, outs, params), "forward"


def _lead(sol: Solution) -> tuple[int, ...]:
    return () if sol.batch is None else (sol.batch,)


def _reverse(sol: Solution, outs: Sequence[int], params: Sequence[int]
             ) -> tuple[tuple[FloatArray, ...], ...]:
    """One vjp per output entry (a unit cotangent on every batch element at once)."""
    prog, lead = sol.program, _lead(sol)
    ospecs, pspecs = prog.retrieval.outputs, prog.layout.specs
    result = []
    for i in outs:
        shape = ospecs[i].shape
        rows = []
        for e in np.ndindex(shape):
            ct = np.zeros((*lead, *shape))
            ct[(Ellipsis, *e)] = 1.0
            cts: list[Any] = [None] * len(ospecs)
            cts[i] = ct
            g = sol.vjp(*cts)
            rows.append([g[j] for j in params])
        per_param = []
        for b, j in enumerate(params):
            stacked = np.stack([r[b] for r in rows], axis=len(lead))  # (lead, size_o, *pshape)
            per_param.append(stacked.reshape((*lead, *shape, *pspecs[j].shape)))
        result.append(tuple(per_param))
    return tuple(result)


def _forward(sol: Solution, outs: Sequence[int], params: Sequence[int]
             ) -> tuple[tuple[FloatArray, ...], ...]:
    """One jvp per parameter entry (an unbatched tangent broadcasts to every element)."""
    prog, lead = sol.program, _lead(sol)
    ospecs, pspecs = prog.retrieval.outputs, prog.layout.specs
    cols: dict[int, list[tuple[FloatArray, ...]]] = {}
    for j in params:
        cols[j] = []
        for e in np.ndindex(pspecs[j].shape):
            t = np.zeros(pspecs[j].shape)
            t[e] = 1.0
            tangents: list[Any] = [None] * len(pspecs)
            tangents[j] = t
            cols[j].append(sol.jvp(*tangents))
    result = []
    for i in outs:
        per_param = []
        for j in params:
            stacked = np.stack([c[i] for c in cols[j]], axis=-1)  # (lead, *oshape, size_p)
            per_param.append(stacked.reshape((*lead, *ospecs[i].shape, *pspecs[j].shape)))
        result.append(tuple(per_param))
    return tuple(result)
