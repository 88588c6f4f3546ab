"""The JAX layer: a compiled CVXPY problem as a JAX function of its parameters.

    layer = CvxpyLayer(problem, parameters=[A, b], variables=[x])
    x_star, = layer(A, b)              # under jit, vmap, grad/vjp/jacrev and jvp/jacfwd

How it composes. A ``jax.custom_jvp`` function: its value is the core's solve, run on the
host by ``jax.pure_callback``; its tangent is the core's ``Solution.jvp``, with
``Solution.vjp`` as its transpose, each a callback, paired by ``jax.lax.custom_linear_solve``
(the one JAX primitive taking a user-supplied transpose, with jit, batching and transpose
rules; its identity ``matvec`` is only evaluated for tangents of its empty closure). So JAX
itself transposes the tangent (grad, vjp, jacrev) and batches it (vmap, jacfwd). Callbacks
use ``vmap_method="expand_dims"``; a vmapped call's leading axes merge into the core's batch
axis: ONE batched solve. A derivative callback re-solves at the same parameters (the solvers
are deterministic) rather than keep state. A second derivative raises ``DerivativeError``.
float32/float64 inputs are solved in float64 and returned in their dtype.

Errors: shapes are checked at trace time (:class:`dpplayers.ParameterError` names the
parameter and the expected and actual shape). For concrete inputs (no jit/vmap; eager grad
and jvp included) the core's errors keep their type: ``ParameterError`` (NaN/Inf, broken
attribute), :class:`dpplayers.SolverError` (batch element, status). Under jit/vmap JAX
re-raises a callback's exception as ``jax.errors.JaxRuntimeError`` carrying its message;
pass ``on_failure="nan"`` to get NaN values and derivatives for failed elements instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from ._program import CompiledProblem
from ._program import compile as compile_problem
from ._recent import RecentSolutions
from ._solve.solver_args import layer_solver
from .errors import DerivativeError, ParameterError


class CvxpyLayer:
    """A differentiable JAX layer for a DPP (``gp=True``: DGP) CVXPY problem; a drop-in for
    ``cvxpylayers.jax.CvxpyLayer``. ``variables`` may hold ``con.dual_variables[0]``;
    ``solver`` is "SCS" (default; cvxpylayers' "DIFFCP") or "CLARABEL"; ``verbose`` prints
    the solver's log; ``solver_args`` (solver settings and the derivative ``mode``,
    ``atol``, ``btol``, ``iter_lim``; cvxpylayers' keys are translated) are defaults a
    call's own override; ``options`` go to :func:`dpplayers.compile` (``mode``, ...).
    Raises ``DPPError`` if the problem is not DPP or parameters/variables don't match it.
    """

    def __init__(self, problem: cp.Problem, parameters: Sequence[cp.Parameter],
                 variables: Sequence[cp.Variable], gp: bool = False, solver: str | None = None,
                 solver_args: dict[str, Any] | None = None, verbose: bool = False,
                 **options: Any) -> None:
        self.program: CompiledProblem = compile_problem(
            problem, parameters, variables, solver=layer_solver(solver), gp=gp, **options)
        self.solver_args = {**({"verbose": True} if verbose else {}), **(solver_args or {})}
        self._recent = RecentSolutions()  # lets the derivative callbacks reuse the forward solve
        #: one _Host per call configuration: the same callbacks every call, so that eager
        #: JAX finds its compiled dispatches cached instead of compiling them anew
        self._hosts: dict[str, _Host] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle/copy without the per-configuration callbacks (rebuilt on the next call)."""
        return {**self.__dict__, "_hosts": {}}

    def __call__(self, *params: jax.typing.ArrayLike, solver_args: dict[str, Any] | None = None,
                 on_failure: str = "raise", inaccurate: str | None = None,
                 warm_start: bool = False) -> tuple[jax.Array, ...]:
        """The requested variables at ``params`` (each may have a leading batch axis;
        unbatched ones broadcast). ``on_failure="nan"``: NaN for failed elements, no raise.
        ``inaccurate``: "warn" (default; an element stopped at an iteration limit keeps its
        point, with an ``InaccurateSolutionWarning``) or "fail" (it counts as failed).
        ``warm_start`` is accepted for cvxpylayers' call signature; a JAX layer is a pure
        function and keeps no earlier solution, so every call starts cold."""
        if on_failure not in ("raise", "nan"):
            raise ValueError(f"on_failure must be 'raise' or 'nan', got {on_failure!r}.")
        self.program.layout.check_given(params)  # names a missing (None) value
        args = {**self.solver_args, **(solver_args or {})}
        if inaccurate is not None:
            args["inaccurate"] = inaccurate  # the core reads it there (and validates it)
        arrays = [jnp.asarray(p) for p in params]
        batch = self.program.layout.batch_size([a.shape for a in arrays])  # trace-time checks
        for spec, a in zip(self.program.layout.specs, arrays):
            if jnp.iscomplexobj(a):  # a cast to float would drop the imaginary part
                raise ParameterError(
                    f"{spec.label} has complex dtype {a.dtype}, but the parameter is real; "
                    "pass real values (complex parameters are not supported).")
        dtype = jnp.result_type(*arrays)
        dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)
        # one leading axis on every parameter (size 1 if unbatched), whatever vmap adds
        lead = [(a if a.ndim > len(s.shape) else a[None]).astype(dtype)
                for a, s in zip(arrays, self.program.layout.specs)]
        key = repr((sorted(args.items(), key=lambda kv: kv[0]), on_failure, str(dtype)))
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(self.program, args, on_failure, np.dtype(dtype),
                                            self._recent)
        outputs = host.layer(*lead)
        return tuple(outputs) if batch is not None else tuple(o[0] for o in outputs)


def _layer(host: _Host) -> Callable[..., tuple[jax.Array, ...]]:
    """θ ↦ outputs as a custom_jvp function (built once per host, so its callbacks are the
    same objects every call); ``params[j]`` is (L_j, *shape_j), L_j ∈ {1, L}."""
    sizes = [o.size for o in host.program.retrieval.outputs]
    callbacks: dict[tuple[str, tuple[int, ...]], Callable] = {}

    def on_host(name: str, active: tuple[int, ...], struct: list) -> Callable:
        if (name, active) not in callbacks:
            fn = partial(getattr(host, name), active)
            callbacks[name, active] = lambda struct, theta, v: _call_host(fn, struct,
                                                                         (*theta, v))[0]
        call = callbacks[name, active]
        return lambda theta: (lambda _, v: call(struct, theta, v))

    @jax.custom_jvp
    def layer(*theta):
        L = max(len(t) for t in theta)
        return _call_host(host.solve, [jax.ShapeDtypeStruct((L, *o.shape), host.dtype)
                                       for o in host.program.retrieval.outputs], theta)

    @partial(layer.defjvp, symbolic_zeros=True)
    def layer_jvp(primals, tangents):
        outs = layer(*primals)
        L = outs[0].shape[0]
        active = tuple(j for j, t in enumerate(tangents) if not isinstance(t, SymbolicZero))
        flat = jnp.concatenate([jnp.broadcast_to(tangents[j].reshape(len(tangents[j]), -1),
                                                 (L, tangents[j][0].size)) for j in active], 1)
        b = jnp.pad(flat, ((0, 0), (0, max(0, sum(sizes) - flat.shape[1]))))
        struct, theta = [jax.ShapeDtypeStruct(b.shape, b.dtype)], _first_order(*primals)
        # a linear map and its transpose (module docstring); the identity is never evaluated
        x = jax.lax.custom_linear_solve(
            lambda v: v, b, solve=on_host("jvp", active, struct)(theta),
            transpose_solve=on_host("vjp", active, struct)(theta), symmetric=True)
        ends = np.cumsum([0, *sizes])
        return outs, tuple(x[:, a:e].reshape(o.shape) for a, e, o in zip(ends, ends[1:], outs))

    return layer


@jax.custom_jvp
def _first_order(*theta: jax.Array) -> tuple[jax.Array, ...]:
    """Identity on what the derivative callbacks close over; its derivative is a second one."""
    return theta


@_first_order.defjvp
def _first_order_jvp(primals, tangents):
    raise DerivativeError("dpplayers.jax.CvxpyLayer is differentiable once (under vmap and jit "
                          "too); second derivatives (jax.hessian, grad of grad) are not available.")


def _call_host(fn: Callable, structs: list, args: Sequence) -> tuple[jax.Array, ...]:
    """``fn`` on the host: called directly on concrete inputs (errors keep their type)."""
    if any(isinstance(a, jax.core.Tracer) for a in args):
        return tuple(jax.pure_callback(fn, structs, *args, vmap_method="expand_dims"))
    return tuple(jnp.asarray(r) for r in fn(*(np.asarray(a) for a in args)))


@dataclass(frozen=True, eq=False)
class _Host:
    """The core on the host: solve, jvp and vjp for values with any leading axes."""

    program: CompiledProblem
    solver_args: dict[str, Any]
    on_failure: str
    dtype: np.dtype
    recent: RecentSolutions

    @functools.cached_property
    def layer(self) -> Callable[..., tuple[jax.Array, ...]]:
        """This configuration's custom_jvp function (:func:`_layer`)."""
        return _layer(self)

    def _solve(self, values: Sequence[np.ndarray]):
        """Values (*lead_j, *shape_j): the leads broadcast to ``lead``, the core's batch."""
        specs = self.program.layout.specs
        lead = np.broadcast_shapes(*(v.shape[: v.ndim - len(s.shape)]
                                     for v, s in zip(values, specs)))
        flat = [np.broadcast_to(np.asarray(v, np.float64), (*lead, *s.shape)).reshape(-1, *s.shape)
                for v, s in zip(values, specs)]
        return self.recent.solve(self.program, flat, self.solver_args, self.on_failure), lead

    def solve(self, *values: np.ndarray) -> list[np.ndarray]:
        sol, lead = self._solve(values)
        return [np.asarray(v, self.dtype).reshape(*lead, *o.shape)
                for v, o in zip(sol.values, self.program.retrieval.outputs)]

    def _apply(self, values, b: np.ndarray, apply: Callable) -> np.ndarray:
        """Solve at ``values``, then ``apply(sol, rows)`` to S rows of b (one per element)
        at a time: several times when b has axes the values lack (jacfwd, jacrev)."""
        sol, lead = self._solve(values)
        full, n = np.broadcast_shapes(lead, b.shape[:-1]), b.shape[-1]
        size = int(np.prod(lead, dtype=np.int64))
        element = np.broadcast_to(np.arange(size).reshape(lead), full).ravel()
        rows = np.broadcast_to(b, (*full, n)).reshape(-1, n)
        out = np.zeros(rows.shape, self.dtype)
        for pos in np.argsort(element, kind="stable").reshape(size, -1).T:
            res = np.hstack([r.reshape(len(pos), -1) for r in apply(sol, rows[pos])])
            out[pos, : res.shape[1]] = res
        return out.reshape(*full, n)

    def jvp(self, active: tuple[int, ...], *args: np.ndarray) -> np.ndarray:
        """Rows: active parameters' tangents, flattened and concatenated ↦ outputs'."""
        specs = self.program.layout.specs
        ends = dict(zip(active, np.cumsum([specs[j].size for j in active])))
        return self._apply(args[:-1], args[-1], lambda sol, rows: sol.jvp(*(
            rows[:, ends[j] - s.size : ends[j]].reshape(-1, *s.shape) if j in ends else None
            for j, s in enumerate(specs))))

    def vjp(self, active: tuple[int, ...], *args: np.ndarray) -> np.ndarray:
        """Rows: outputs' cotangents, flattened and concatenated ↦ active parameters'."""
        outs = self.program.retrieval.outputs
        ends = np.cumsum([o.size for o in outs])
        return self._apply(args[:-1], args[-1], lambda sol, rows: [g for j, g in enumerate(
            sol.vjp(*(rows[:, e - o.size : e].reshape(-1, *o.shape) for e, o in zip(ends, outs))))
            if j in active])
