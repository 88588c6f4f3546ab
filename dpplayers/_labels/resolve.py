"""Which compiled parameter or output a user's cvxpy object (or name) stands for.

A :class:`~dpplayers.CompiledProblem` keeps its parameters and outputs by position and name
(``prog.layout.specs``, ``prog.retrieval.outputs``), not the cvxpy objects themselves. A
named leaf is found by its name; an unnamed one by its shape where that is unambiguous
(every parameter is compiled; a variable only if every variable was requested). Anything
else is refused by name with the list of what the program does hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt

from ..errors import ParameterError, VariableError, given_name, quoted_name

if TYPE_CHECKING:
    from .._program import CompiledProblem

FloatArray = npt.NDArray[np.float64]


def _shape(leaf: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in leaf.shape)


def parameter_names(prog: CompiledProblem) -> str:
    """The program's parameters as messages list them."""
    return ", ".join(prog.layout.names)


def parameter_position(prog: CompiledProblem, param: cp.Parameter | str, what: str = "wrt") -> int:
    """The position of ``param`` (a cvxpy Parameter or a parameter's name) in ``prog``.

    Raises:
        ParameterError: it is not a parameter of the program, or an unnamed parameter of a
            program compiled with a reordered parameter list.
    """
    specs = prog.layout.specs
    if isinstance(param, str):
        hits = [i for i, s in enumerate(specs) if s.name == param]
        if len(hits) == 1:
            return hits[0]
        raise ParameterError(f"{what}: no parameter named {param!r} in the program (its "
                             f"parameters: {parameter_names(prog)}).")
    if not isinstance(param, cp.Parameter):
        raise ParameterError(f"{what} must be a cvxpy Parameter or a parameter's name, got "
                             f"{type(param).__name__}: {param}.")
    own = prog.problem.parameters()
    if all(p.id != param.id for p in own):
        raise ParameterError(f"{what}: parameter {quoted_name(param)} (shape {_shape(param)}) "
                             f"is not a parameter of the program (its parameters: "
                             f"{parameter_names(prog)}).")
    name = given_name(param)
    if name is not None:
        hits = [i for i, s in enumerate(specs) if s.named and s.name == name]
    else:  # all parameters are compiled: the one unnamed spec of its shape is it
        hits = [i for i, s in enumerate(specs) if not s.named and s.shape == _shape(param)]
    if len(hits) == 1:
        return hits[0]
    why = ("its name is not unique" if name
           else "unnamed, and another unnamed parameter has its shape")
    raise ParameterError(f"{what}: cannot tell which compiled parameter {quoted_name(param)} is "
                         f"({why}): give it a unique name, cp.Parameter(..., name='w'), or pass "
                         "the name.")


def output_position(prog: CompiledProblem, item: cp.Variable | str) -> int:
    """The position of a requested variable or dual variable (or its name) among ``prog``'s
    outputs.

    Raises:
        VariableError: it was not requested at compile time (or is not a cvxpy Variable).
    """
    outs = prog.retrieval.outputs
    listed = ", ".join(repr(o.name) for o in outs)
    if isinstance(item, str):
        hits = [i for i, o in enumerate(outs) if o.name == item]
        if len(hits) == 1:
            return hits[0]
        raise VariableError(f"of: no output named {item!r} was requested at compile time "
                            f"(requested: {listed}).")
    if not isinstance(item, cp.Variable):
        raise VariableError(f"of must be a cvxpy Variable, a constraint's dual variable or an "
                            f"output's name, got {type(item).__name__}: {item}.")
    constraint = _owning_constraint(prog.problem, item)
    hits = _dual_hits(outs, constraint, item) if constraint is not None else _primal_hits(
        prog, outs, item)
    if len(hits) == 1:
        return hits[0]
    what = (f"the dual variable of ({constraint})" if constraint is not None
            else f"variable {quoted_name(item)} (shape {_shape(item)})")
    if hits:
        raise VariableError(f"of: cannot tell which requested output {what} is (requested: "
                            f"{listed}); pass the output's name or its position.")
    raise VariableError(f"of: {what} was not requested at compile time (requested: {listed}); "
                        "pass it in compile(..., variables=[...]).")


def _owning_constraint(problem: cp.Problem, var: cp.Variable) -> Any:
    for con in problem.constraints:
        if any(d.id == var.id for d in con.dual_variables):
            return con
    return None


def _dual_hits(outs: Sequence[Any], constraint: Any, var: cp.Variable) -> list[int]:
    """Dual outputs whose name quotes this constraint (the compiler names a dual by the
    constraint's text, cut at 40 characters) and whose shape is the dual's."""
    text = str(constraint)[:37]
    return [i for i, o in enumerate(outs)
            if o.dual and text in o.name and o.shape == _shape(var)]


def _primal_hits(prog: CompiledProblem, outs: Sequence[Any], var: cp.Variable) -> list[int]:
    """A named variable by its name; an unnamed one by shape, only where every variable
    of the problem was requested (else an unrequested one of the same shape could be it)."""
    name = given_name(var)
    if name is not None:
        return [i for i, o in enumerate(outs) if not o.dual and o.name == name]
    own = prog.problem.variables()
    if all(v.id != var.id for v in own) or sum(not o.dual for o in outs) != len(own):
        return []
    same = [v for v in own if given_name(v) is None and _shape(v) == _shape(var)]
    hits = [i for i, o in enumerate(outs)
            if not o.dual and o.name.startswith("#") and o.shape == _shape(var)]
    return hits if len(same) == 1 else []


def parameter_values(prog: CompiledProblem, values: Mapping | Sequence | None) -> list[FloatArray]:
    """Values for every parameter of ``prog`` in its order: from a sequence in that order,
    a mapping keyed by Parameter or name, or (None) each parameter's ``.value``."""
    specs = prog.layout.specs
    if values is not None and not isinstance(values, Mapping):
        values = list(values)
        if len(values) != len(specs):
            raise ParameterError(f"values: expected {len(specs)} values "
                                 f"({parameter_names(prog)}), got {len(values)}.")
        return [np.asarray(v, dtype=np.float64) for v in values]
    out: list[Any] = [None] * len(specs)
    if values is None:
        for i, p in _positions(prog):
            out[i] = p.value
    else:
        for key, v in values.items():
            out[parameter_position(prog, key, "values")] = v
    missing = [specs[i].display for i, v in enumerate(out) if v is None]
    if missing:
        raise ParameterError(f"values: no value for parameter(s) {', '.join(missing)}.")
    return [np.asarray(v, dtype=np.float64) for v in out]


def _positions(prog: CompiledProblem) -> list[tuple[int, cp.Parameter]]:
    return [(parameter_position(prog, p, "values"), p) for p in prog.problem.parameters()]
