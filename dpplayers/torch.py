"""PyTorch adapter: ``CvxpyLayer``, a ``torch.nn.Module`` over a compiled problem.

Tensors go to float64 NumPy and back in the inputs' dtype and device; the core validates,
batches and applies the GP log. Three ``autograd.Function``s run NumPy: ``_Solve`` (θ ↦
outputs), ``_VJP`` (cotangents ↦ per-element parameter cotangents, summed over the batch
by ``_Solve.backward`` for broadcast parameters) and ``_JVP`` (tangents ↦ output
tangents). They share a ``_Call`` record that carries the ``Solution`` to the derivatives.
For ``torch.func`` each has a ``vmap`` rule: a vmap level that batches the parameters
folds into the core's batch axis, (V, B, …) → (V·B, …), so it is one batched solve and one
batched vjp/jvp (parameters ride along into ``_VJP``/``_JVP`` to mark such levels); a
level batching only (co)tangents (``jacrev``/``jacfwd``) loops, reusing the factorisation.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import cvxpy as cp
import numpy as np
import torch

from ._program import CompiledProblem
from ._program import compile as compile_problem
from ._solution import Solution
from ._solve.solver_args import layer_solver
from ._sparse import c_ordered


@dataclass
class _Call:
    """One layer call: the program, its options, and the Solution once solved."""

    program: CompiledProblem
    solver_args: dict[str, Any]
    on_failure: str
    warm_start: Solution | None = None
    solution: Solution | None = None
    inaccurate: str = "warn"

    def shapes(self, outputs: bool = False) -> list[tuple[int, ...]]:
        specs = self.program.retrieval.outputs if outputs else self.program.layout.specs
        return [s.shape for s in specs]


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    if t is None:
        return None
    if t.dtype is torch.float64 and t.is_cpu:  # no conversion: skip .to()
        return t.detach().numpy()
    if t.is_complex():  # left complex: ParameterLayout.stack names it (a cast would drop .imag)
        return t.detach().cpu().numpy()
    return t.detach().to("cpu", torch.float64).numpy()


def _tensor(a: np.ndarray, like: Sequence[torch.Tensor]) -> torch.Tensor:
    """``a`` in the promoted floating dtype of ``like`` (float32 stays float32), on its device,
    C-ordered: a gradient pulled back from θ is a strided view with the batch as its fastest
    axis, which torch's AccumulateGrad would copy to the parameter's layout by a whole-array
    copy (an OptNet QP's Q at batch 128: 55 ms there, 14 ms in :func:`c_ordered`'s tiles)."""
    dtype = reduce(torch.promote_types, (t.dtype for t in like), torch.float32)
    out = torch.from_numpy(c_ordered(np.asarray(a)))
    if dtype is torch.float64 and (not like or like[0].is_cpu):  # already so: skip .to()
        return out
    return out.to(device=like[0].device if like else None, dtype=dtype)


def _fold(values: Sequence, in_dims: Sequence, shapes: Sequence, lead: tuple[int, ...]) -> list:
    """Merge a vmap level into the core's batch axis: each value becomes (V·B, *shape)."""
    out = []
    for v, d, s in zip(values, in_dims, shapes):
        if v is not None:
            v = v.movedim(d, 0) if d is not None else v.expand(lead[0], *v.shape)
            if len(lead) == 2 and v.dim() == len(s) + 1:
                v = v.unsqueeze(1)  # a per-sample value broadcast over the batch B
            v = v.expand(*lead, *v.shape[len(lead) :]).reshape(-1, *v.shape[len(lead) :])
        out.append(v)
    return out


def _batched(fn: type[torch.autograd.Function], info: Any, in_dims: Sequence, call: _Call,
             args: Sequence, shapes: Sequence) -> tuple[tuple[torch.Tensor, ...], int]:
    """The vmap rule shared by the three Functions (see the module docstring)."""
    dims, p_shapes = in_dims[1:], call.shapes()
    if all(d is None for d in dims[: len(p_shapes)]):  # only directions batched: loop
        results = [fn.apply(call, *(a if d is None else a.select(d, i) for a, d in zip(args, dims)))
                   for i in range(info.batch_size)]
        return tuple(torch.stack(r) for r in zip(*results)), 0
    # B: the batch size each sample passes to the core, from its parameters' shapes
    B = next((p.shape[1 if d == 0 else 0] for p, d, s in zip(args, dims, p_shapes)
              if p.dim() - (d is not None) == len(s) + 1), None)
    lead = (info.batch_size,) if B is None else (info.batch_size, B)
    folded = _fold(args, dims, p_shapes + list(shapes), lead)
    return tuple(o.reshape(*lead, *o.shape[1:]) for o in fn.apply(call, *folded)), 0


class _Solve(torch.autograd.Function):
    generate_vmap_rule = False

    @staticmethod
    def forward(call: _Call, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        call.solution = call.program.solve(*map(_numpy, params), solver_args=call.solver_args,
                                           warm_start=call.warm_start, on_failure=call.on_failure,
                                           inaccurate=call.inaccurate)
        return tuple(_tensor(v, params) for v in call.solution.values)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        ctx.call = inputs[0]
        ctx.save_for_backward(*inputs[1:])
        ctx.save_for_forward(*inputs[1:])

    @staticmethod
    def backward(ctx: Any, *cotangents: torch.Tensor) -> tuple:
        params, need = ctx.saved_tensors, ctx.needs_input_grad[1:]
        grads = _apply(_VJP, ctx.call, *params, *cotangents)
        # a parameter broadcast over a batched call gets the sum of its per-element cotangents
        return (None, *(None if not n else g.sum(0) if g.dim() > p.dim() else g
                        for g, p, n in zip(grads, params, need)))

    @staticmethod
    def jvp(ctx: Any, _: None, *tangents: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        return _JVP.apply(ctx.call, *ctx.saved_tensors, *tangents)

    @staticmethod
    def vmap(info: Any, in_dims: Sequence, call: _Call, *params: torch.Tensor) -> tuple:
        return _batched(_Solve, info, in_dims, call, params, [])


class _AbstractDerivative(torch.autograd.Function):
    """A linear map of the call's Solution; ``forward`` and ``vmap`` are per subclass."""

    generate_vmap_rule = False

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *_: Any) -> None:
        raise NotImplementedError("dpplayers.torch.CvxpyLayer provides first derivatives only "
                                  "(one reverse or forward pass); nested ones are unsupported.")

    jvp = backward


class _VJP(_AbstractDerivative):
    """(parameters, output cotangents) ↦ per-element parameter cotangents."""

    @staticmethod
    def forward(call: _Call, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        grads = call.solution.vjp(*map(_numpy, args[len(call.shapes()) :]))
        return tuple(_tensor(g, [p]) for g, p in zip(grads, args))

    @staticmethod
    def vmap(info: Any, in_dims: Sequence, call: _Call, *args: torch.Tensor) -> tuple:
        return _batched(_VJP, info, in_dims, call, args, call.shapes(outputs=True))


class _JVP(_AbstractDerivative):
    """(parameters, parameter tangents) ↦ output tangents."""

    @staticmethod
    def forward(call: _Call, *args: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        tangents = call.solution.jvp(*map(_numpy, args[len(call.shapes()) :]))
        return tuple(_tensor(t, args[: len(call.shapes())]) for t in tangents)

    @staticmethod
    def vmap(info: Any, in_dims: Sequence, call: _Call, *args: torch.Tensor | None) -> tuple:
        return _batched(_JVP, info, in_dims, call, args, call.shapes(outputs=False))


class CvxpyLayer(torch.nn.Module):
    """A differentiable layer x*(θ), a drop-in for ``cvxpylayers.torch.CvxpyLayer``.

    Args:
        problem, parameters, variables: a DPP problem (DGP with ``gp=True``), exactly its
            parameters (in call order), and the variables and/or constraint duals to return.
        solver: "SCS" (default) or "CLARABEL" (cvxpylayers' "DIFFCP" means SCS).
        solver_args: defaults for every call (solver settings, derivative ``mode``,
            ``on_failure``, ``inaccurate``; cvxpylayers' keys such as ``n_jobs_forward`` or
            ``solve_method`` are translated), merged under each call's ``solver_args``.
        on_failure: "raise" :class:`dpplayers.SolverError`, or "nan" for failed elements.
        inaccurate: "warn" (an element stopped at an iteration limit or solved to reduced
            accuracy keeps its point, with a :class:`dpplayers.InaccurateSolutionWarning`,
            as in cvxpylayers) or "fail" (it counts as failed; ``on_failure`` decides).
        **options: for :func:`dpplayers.compile` (``mode``, ``canon_backend``, ...).

    Raises:
        ValueError: ``dpplayers.DPPError`` naming a missing or unknown parameter or
            variable, or the non-DPP expression.
    """

    def __init__(self, problem: cp.Problem, parameters: Sequence[cp.Parameter],
                 variables: Sequence[cp.Variable], *, gp: bool = False, solver: str | None = None,
                 solver_args: dict[str, Any] | None = None, on_failure: str = "raise",
                 inaccurate: str = "warn", verbose: bool = False, **options: Any) -> None:
        super().__init__()
        self.program = compile_problem(problem, parameters, variables,
                                       solver=layer_solver(solver), gp=gp, **options)
        self.solver_args = {**({"verbose": True} if verbose else {}), **(solver_args or {})}
        self.on_failure = on_failure
        self.inaccurate = inaccurate
        self._previous: Solution | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle/copy (``torch.save``, ``copy.deepcopy``) without the warm-start cache;
        the program drops its own caches and solver workspaces."""
        return {**super().__getstate__(), "_previous": None}

    def forward(self, *params: torch.Tensor, solver_args: dict[str, Any] | None = None,
                warm_start: bool = False) -> tuple[torch.Tensor, ...]:
        """One tensor per requested variable (inputs' dtype and device) for parameter
        tensors with optional leading batch axes. ``warm_start=True`` starts from this
        layer's previous warm-started solution (batch size 1 or this call's)."""
        self.program.layout.check_given(params)  # names a missing (None) value
        args = {**self.solver_args, **(solver_args or {})}
        call = _Call(self.program, args, args.pop("on_failure", self.on_failure),
                     self._previous if warm_start else None,
                     inaccurate=args.pop("inaccurate", self.inaccurate))
        out = _apply(_Solve, call, *(torch.as_tensor(p) for p in params))
        if warm_start:
            self._previous = call.solution
        return out


def _apply(fn: type[torch.autograd.Function], *args: Any) -> Any:
    """``fn.apply(*args)``, without its binding of the arguments to ``forward``'s signature
    where no ``torch.func`` transform is active. ``Function.apply`` binds them on every call
    (for ``setup_context``-style Functions, ~7 µs); the forwards here take ``(call, *tensors)``
    with no defaults or keywords, so binding returns them unchanged, and what is left of
    ``Function.apply`` without transforms is this: unwrap dead functorch wrappers, then
    autograd's own apply. Where torch lacks either hook, or a transform is active (``vmap``,
    ``grad``, ``jvp``, ...), ``fn.apply`` runs as usual."""
    if _PLAIN_APPLY and not torch._C._are_functorch_transforms_active():
        return _PLAIN_APPLY[fn](*_unwrap_dead_wrappers(args))
    return fn.apply(*args)


# ``Function.apply`` binds its arguments to ``forward``'s signature on every call (for
# ``setup_context``-style Functions), and ``inspect.signature`` rebuilds that signature each
# time unless the function carries one: ~15 µs per layer call, a third of dpplayers' own
# Python around a small solve. The signatures never change, so they are computed once.
for _fn in (_Solve, _VJP, _JVP):
    _fn.forward.__signature__ = inspect.signature(_fn.forward)

try:  # autograd's apply below Function.apply (see _apply); absent hooks: the usual path
    from torch._functorch.utils import unwrap_dead_wrappers as _unwrap_dead_wrappers

    _PLAIN_APPLY = ({fn: super(torch.autograd.Function, fn).apply for fn in (_Solve, _VJP)}
                    if hasattr(torch._C, "_are_functorch_transforms_active") else {})
except (ImportError, AttributeError):
    _PLAIN_APPLY = {}
