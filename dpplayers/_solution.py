"""A solved batch: values, per-element status, and the derivative chain C → J⁻¹ → R.

``jvp`` pushes parameter tangents forward: dθ ↦ d(data) = C dθ ↦ dF ↦ [du; dv] = −J⁻¹ dF
↦ (dx, dy) ↦ R (dx, dy). ``vjp`` runs the transposed chain Rᵀ → J⁻ᵀ → (∂data)ᵀ → Cᵀ. The
C maps, R and the data adjoint act on the whole batch at once. The solves with J are
lazy (on the first derivative request) and batched as :mod:`dpplayers._derivative.batch`
decides. In ``mode="embedding"`` the middle link is the self-dual embedding's M solved by
LSQR, element by element (:mod:`dpplayers._derivative.embedding`). The forward pass that
builds a Solution is :mod:`dpplayers._forward`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ._cached import cached
from ._derivative.batch import BatchDerivative, EmbeddingBatch
from ._derivative.conditioning import outputs_ambiguous
from ._derivative.embedding import EmbeddingLSQR
from ._derivative.linear_solvers import SolveStats
from ._derivative.objective import canonical_value, data_cotangents
from ._derivative.qp_elements import RouteElements
from ._labels.blocks import Sensitivity
from ._labels.blocks import sensitivity as labelled_sensitivity
from ._solve.backends import Status
from .errors import DegenerateDerivativeWarning, DerivativeError

FloatArray = npt.NDArray[np.float64]
DERIVATIVE_OPTIONS = ("mode", "atol", "btol", "iter_lim", "refine")


@dataclass
class Solution:
    """The result of ``CompiledProblem.solve``.

    Attributes:
        values: one array per requested variable (leading batch axis iff the call had one).
        status: per-element :class:`Status` (tuple, length B).
        info: per-element solver facts: status string, iterations, seconds.
        x, y, s: the canonical primal, dual and slack, shape (n or m, B).
    """

    program: Any = field(repr=False)
    values: tuple[FloatArray, ...]
    status: tuple[Status, ...]
    info: tuple[dict[str, Any], ...]
    x: FloatArray = field(repr=False)
    y: FloatArray = field(repr=False)
    s: FloatArray = field(repr=False)
    batch: int | None
    mode: str
    derivative_options: dict[str, Any] = field(repr=False)
    _raw_theta: FloatArray = field(repr=False)
    _data: tuple = field(repr=False)  # (P data, A data, b, c), each (rows, B or 1)
    accept_inaccurate: bool = field(default=True, repr=False)  # inaccurate="warn" (else "fail")
    stats: list[SolveStats | None] = field(default_factory=list, repr=False)
    #: per element, the dense QP route's kept factorisations (RawSolution.kept), or None
    route_factors: tuple | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.stats = [None] * len(self.status)  # one slot per element (threads write slots)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle/copy without the factorisations and projection derivatives (native
        objects, some not picklable): the copy recomputes them on its first vjp/jvp."""
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_ok_keys", "_derivative", "_chain")}

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        """Per element: its values were returned (solved, or under ``inaccurate="warn"``
        stopped at a usable inaccurate point); False: NaN-filled failure."""
        return np.array([s.usable(self.accept_inaccurate) for s in self.status])

    @property
    def accurate(self) -> npt.NDArray[np.bool_]:
        """Per element: solved to the requested tolerances."""
        return np.array([s.accurate for s in self.status])

    @property
    def degenerate(self) -> npt.NDArray[np.bool_]:
        """Per element: a derivative solve met a singular or near-singular J (a condition
        estimate above its limit, :mod:`dpplayers._derivative.conditioning`: a non-unique
        canonical solution) and gave J's minimum-norm least-squares answer; where that
        leaves the requested outputs' derivative ambiguous, the solve also warned
        (``DegenerateDerivativeWarning``)."""
        return np.array([bool(s and s.degenerate) for s in self.stats])

    @property
    def fell_back(self) -> npt.NDArray[np.bool_]:
        """Per element: an iterative derivative solve stalled and Direct answered (in
        ``"embedding"`` mode: the dense minimum-norm solve of M)."""
        return np.array([bool(s and s.fell_back) for s in self.stats])

    @property
    def residual(self) -> FloatArray:
        """Per element: the largest relative residual of its derivative solves (NaN if none)."""
        return np.array([s.residual if s else np.nan for s in self.stats])

    # -- the derivative ----------------------------------------------------------------

    @cached
    def _derivative(self) -> BatchDerivative:
        """J at every solved element and its solves (built on the first derivative call)."""
        route = RouteElements.of(self.route_factors, self.y, self.s, self.mode)
        return BatchDerivative(self.program, self._data, self.x, self.y, self.s,
                               self._ok_keys, self.mode, self.derivative_options, self.stats,
                               route)

    @cached
    def _ok_keys(self) -> list[int]:
        """The elements that solved."""
        return [k for k, st in enumerate(self.status) if st.usable(self.accept_inaccurate)]

    @cached
    def _chain(self) -> tuple[Any, ...]:
        """The stages from the user's parameters to the requested outputs, each with
        ``forward`` (tangents) and ``backward`` (cotangents): θ's layout, the maps C, the
        solution map's derivative (through J, or the embedding's M), R."""
        middle = (EmbeddingBatch(self._derivative) if self.mode == EmbeddingLSQR.name
                  else self._derivative)
        values = self.values if self.batch is not None else tuple([v[None] for v in self.values])
        prog, nb = self.program, self.x.shape[1]
        return (_ParameterStage(prog.layout, self.batch, self._raw_theta, nb),
                _DataStage(prog), middle, _OutputStage(prog.retrieval, values, self.batch, nb))

    def vjp(self, *cotangents: npt.ArrayLike | None, executor: Any = None,
            chunksize: int | None = None) -> tuple[FloatArray, ...]:
        """Cotangents on the requested variables ↦ cotangents on the parameters: the chain
        backwards, Rᵀ → (J⁻¹)ᵀ → Cᵀ. ``executor`` (a ``concurrent.futures.Executor`` or
        ``dask.distributed.Client``): in chunks there, each chunk's J rebuilt from (data,
        x, y, s) on a worker (``CompiledProblem.derive``)."""
        if executor is not None:
            return self.program.derive(self, "vjp", cotangents, executor, chunksize)
        g: Any = self._check_outputs(cotangents, "cotangent")
        for stage in reversed(self._chain):
            g = stage.backward(g)
        self._warn_degenerate()
        return g

    def jvp(self, *tangents: npt.ArrayLike | None, executor: Any = None,
            chunksize: int | None = None) -> tuple[FloatArray, ...]:
        """Tangents on the parameters ↦ tangents on the requested variables: the chain
        forwards, C → J⁻¹ → R (``executor``: as in :meth:`vjp`)."""
        if executor is not None:
            return self.program.derive(self, "jvp", tangents, executor, chunksize)
        t: Any = tangents
        for stage in self._chain:
            t = stage.forward(t)
        self._warn_degenerate()
        return t

    def jacobian(self, executor: Any = None,
                 chunksize: int | None = None) -> tuple[tuple[FloatArray, ...], ...]:
        """Full blocks d(variable)/d(parameter): ``jac[i][j]`` has shape
        ([B,] *variable_i.shape, *parameter_j.shape).

        One factorisation per element and one multi-column solve: with Jᵀ and one column
        per output entry when there are fewer outputs than parameter entries (reverse),
        with J and one column per parameter entry otherwise (forward). ``executor``: as in
        :meth:`vjp`."""
        if executor is not None:
            return self.program.derive(self, "jacobian", (), executor, chunksize)
        prog = self.program
        q, nb, K = prog.layout.theta_size, self.x.shape[1], prog.retrieval.matrix.shape[0]
        flat = self._reverse_jacobian() if K < q else self._forward_jacobian()  # (K, B, q)
        if prog.layout.log_rows().size:  # θ's rows → the user's entries (GP logs)
            flat = prog.layout.to_user(flat.transpose(2, 1, 0), self._raw_theta).transpose(2, 1, 0)
        blocks = []
        for spec, value in zip(prog.retrieval.outputs, self.values):
            vals = value if self.batch is not None else value[None]
            per_param = []
            blk = flat[spec.offset : spec.offset + spec.size]
            if spec.exp:
                blk = blk * np.moveaxis(vals, 0, -1).reshape(spec.size, nb, 1, order="F")
            for ps in prog.layout.specs:
                sub = blk[:, :, ps.offset : ps.offset + ps.size]  # (size_o, B, size_p)
                sub = sub.reshape((*spec.shape, nb, *ps.shape), order="F")
                sub = np.moveaxis(sub, len(spec.shape), 0)
                per_param.append(sub if self.batch is not None else sub[0])
            blocks.append(tuple(per_param))
        self._warn_degenerate()
        return tuple(blocks)

    def _warn_degenerate(self) -> None:
        """Warn (once per element) where a derivative solve answered by minimum norm and
        the requested outputs move along J's null space (:func:`outputs_ambiguous`)."""
        checked = self.__dict__.setdefault("_degenerate_checked", {})
        new = [int(k) for k in np.flatnonzero(self.degenerate) if k not in checked]
        if not new:
            return
        for k in new:
            solver, state, op = self._derivative.element(k)
            checked[k] = outputs_ambiguous(op, self.program.retrieval.matrix,
                                           solver.null_space(state))
        ambiguous = [k for k in new if checked[k]]
        if not ambiguous:
            return
        where = (f"batch elements {ambiguous[:10]}{' ...' if len(ambiguous) > 10 else ''}"
                 if self.batch is not None else "this problem")
        warnings.warn(
            f"dpplayers: the derivative at {where} met a singular or near-singular KKT system "
            "along which the requested outputs move (their solution is not unique there, or "
            "the problem is badly conditioned): the minimum-norm least-squares answer was "
            "returned. Solution.degenerate flags these elements.",
            DegenerateDerivativeWarning, stacklevel=3)

    def _forward_jacobian(self) -> FloatArray:
        """(K, B, q): J solves with one column per row of θ."""
        prog = self.program
        q, nb = prog.layout.theta_size, self.x.shape[1]
        _, data, middle, _ = self._chain
        dz = middle.forward(data.forward(np.tile(np.eye(q), (1, nb))))  # q columns each
        return prog.retrieval.forward(dz).reshape(-1, nb, q)

    def _reverse_jacobian(self) -> FloatArray:
        """(K, B, q): Jᵀ solves with one column per output entry."""
        prog = self.program
        g_z = prog.retrieval.matrix.T.toarray()  # (n+m, K): one column per output entry
        nb, K = self.x.shape[1], g_z.shape[1]
        G = np.broadcast_to(g_z[:, None, :], (g_z.shape[0], nb, K))  # the same for each
        _, data, middle, _ = self._chain
        g = data.backward(middle.backward(G))  # (q, B·K)
        return g.reshape(-1, nb, K).transpose(2, 1, 0)

    @property
    def objective(self) -> FloatArray | float:
        """The problem's optimal value, as CVXPY's ``problem.value`` (per element, (B,),
        when batched; NaN for a failed element)."""
        value = self._user_objective(self._canonical_objective())
        return value if self.batch is not None else float(value[0])

    def objective_gradient(self) -> tuple[FloatArray, ...]:
        """d(optimal value)/d(parameter), one array per parameter ([B,] *shape): exact, by
        the envelope theorem (the Lagrangian's derivative at the solution,
        :mod:`dpplayers._derivative.objective`); no factorisation is needed."""
        prog = self.program
        canonical = self._canonical_objective()
        g = prog.data_transpose(*data_cotangents(self.x, self.y, prog.P is not None,
                                                 prog.data_patterns))
        g = g + prog.C_d.matrix[:, :-1].toarray().T  # the constant d(θ)'s own map
        scale = prog.sense * (self._user_objective(canonical) if prog.gp else 1.0)
        return prog.layout.pull_back(g * scale, self.batch, self._raw_theta)

    def _canonical_objective(self) -> FloatArray:
        """cᵀx + ½xᵀPx + d(θ) per element (B,)."""
        prog = self.program
        if getattr(prog, "C_d", None) is None:
            raise DerivativeError(
                "the optimal objective cannot be evaluated for this program: it was compiled "
                "(or pickled) by a dpplayers version that did not keep the objective's constant "
                "term; compile the problem again.")
        P_data, _, _, c = self._data
        value = canonical_value(self.x, P_data if prog.P is not None else None, c,
                                prog.data_patterns)
        return value + prog.C_d(prog.layout.restack(self._raw_theta))[0]

    def _user_objective(self, canonical: FloatArray) -> FloatArray:
        """The canonical value as the problem states it (sign of Maximize; exp with gp)."""
        value = self.program.sense * canonical
        return np.exp(value) if self.program.gp else value

    def sensitivity(self, of: Any = None, wrt: Any = None) -> Sensitivity:
        """Labelled Jacobian blocks d(of)/d(wrt): see :func:`dpplayers.sensitivity.sensitivity`."""
        return labelled_sensitivity(self, of=of, wrt=wrt)

    def _check_outputs(self, cts: Sequence, what: str) -> list[FloatArray | None]:
        outs = self.program.retrieval.outputs
        if len(cts) != len(outs):
            raise DerivativeError(
                f"expected {len(outs)} {what}s ({', '.join(o.name for o in outs)}), got {len(cts)}."
            )
        result = []
        for spec, ct in zip(outs, cts):
            if ct is None:
                result.append(None)
                continue
            arr = np.asarray(ct, dtype=np.float64)
            want = spec.shape if self.batch is None else (self.batch, *spec.shape)
            if arr.shape != want:
                raise DerivativeError(f"{what} for '{spec.name}' expects shape {want}, got {arr.shape}.")
            result.append(arr if self.batch is not None else arr[None])
        return result


@dataclass(slots=True)
class _ParameterStage:
    """The user's parameter values ↔ θ (GP logs, symmetric parts, broadcasting)."""

    layout: Any
    batch: int | None
    raw_theta: FloatArray
    count: int  # B

    def forward(self, tangents: Sequence[npt.ArrayLike | None]) -> FloatArray:
        dtheta = self.layout.stack_tangents(tangents, self.batch, self.raw_theta)
        return dtheta if dtheta.shape[1] == self.count else np.repeat(dtheta, self.count, 1)

    def backward(self, g_theta: FloatArray) -> tuple[FloatArray, ...]:
        return self.layout.pull_back(g_theta, self.batch, self.raw_theta)


@dataclass(slots=True)
class _DataStage:
    """θ ↔ the cone program's data (P upper, A, b, c): the maps C and Cᵀ."""

    program: Any

    def forward(self, dtheta: FloatArray) -> tuple[FloatArray | None, ...]:
        return self.program.data_linear(dtheta)

    def backward(self, g: tuple[FloatArray | None, ...]) -> FloatArray:
        return self.program.data_transpose(*g)


@dataclass(slots=True)
class _OutputStage:
    """[x; y] ↔ the requested variables and duals: R and Rᵀ (with exp for GP)."""

    retrieval: Any
    values: tuple[FloatArray, ...]  # each (B, *shape)
    batch: int | None
    count: int  # B

    def forward(self, dz: FloatArray) -> tuple[FloatArray, ...]:
        out = self.retrieval.unflatten_tangent(self.retrieval.forward(dz), self.values)
        return out if self.batch is not None else tuple(o[0] for o in out)

    def backward(self, cotangents: Sequence[FloatArray | None]) -> FloatArray:
        g = self.retrieval.transpose(cotangents, self.values, self.count)
        return g[:, :, None]  # (n+m, B, 1): one column per element
