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

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ._derivative.batch import BatchDerivative
from ._derivative.embedding import EmbeddingLSQR, EmbeddingOperator, embedding_operator
from ._derivative.kkt import data_adjoint, data_rhs
from ._derivative.linear_solvers import AbstractLinearSolver, SolveStats, make_linear_solver
from ._labels.blocks import Sensitivity
from ._labels.blocks import sensitivity as labelled_sensitivity
from ._solve.backends import Status
from .errors import DerivativeError

FloatArray = npt.NDArray[np.float64]
DERIVATIVE_OPTIONS = ("mode", "atol", "btol", "iter_lim", "refine")


def make_strategy(mode: str, options: dict[str, Any]) -> AbstractLinearSolver | EmbeddingLSQR:
    """The derivative mode's strategy: a solver for J, or the embedding's LSQR chain
    (:mod:`dpplayers._derivative.embedding`); raises ValueError on a bad mode or option."""
    if mode == EmbeddingLSQR.name:
        return EmbeddingLSQR.from_options(options)
    return make_linear_solver(mode, options)


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

    def __post_init__(self) -> None:
        self.stats = [None] * len(self.status)  # one slot per element (threads write slots)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle/copy without the factorisations and projection derivatives (native
        objects, some not picklable): the copy recomputes them on its first vjp/jvp."""
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_ok_keys", "_derivative", "_embeddings")}

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
        """Per element: a derivative solve met a singular or near-singular J (condition
        estimate above ``conditioning.CONDITION_LIMIT``: a non-unique canonical solution)
        and gave J's minimum-norm least-squares answer."""
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

    @functools.cached_property
    def _derivative(self) -> BatchDerivative:
        """J at every solved element and its solves (built on the first derivative call)."""
        return BatchDerivative(self.program, self._data, self.y, self.s, self._ok_keys,
                               self.mode, self.derivative_options, self.stats)

    @functools.cached_property
    def _ok_keys(self) -> list[int]:
        """The elements that solved."""
        return [k for k, st in enumerate(self.status) if st.usable(self.accept_inaccurate)]

    def _solve_many(self, keys: list[int], rhs: FloatArray, transpose: bool) -> FloatArray:
        return self._derivative.solve(keys, rhs, transpose)

    def _apply_d(self, keys: list[int], G: FloatArray) -> FloatArray:
        return self._derivative.apply_projection(keys, G)

    def vjp(self, *cotangents: npt.ArrayLike | None) -> tuple[FloatArray, ...]:
        """Cotangents on the requested variables ↦ cotangents on the parameters."""
        prog = self.program
        nb = self.x.shape[1]
        cts = self._check_outputs(cotangents, "cotangent")
        values = [v if self.batch is not None else v[None] for v in self.values]
        g_z = prog.retrieval.transpose(cts, values, nb)  # (n+m, B)
        g_theta = self._pull_to_theta(*self._adjoints(g_z[:, :, None]))
        return prog.layout.pull_back(g_theta, self.batch, self._raw_theta)

    def jvp(self, *tangents: npt.ArrayLike | None) -> tuple[FloatArray, ...]:
        """Tangents on the parameters ↦ tangents on the requested variables."""
        prog = self.program
        dtheta = prog.layout.stack_tangents(tangents, self.batch, self._raw_theta)
        nb = self.x.shape[1]
        if dtheta.shape[1] != nb:
            dtheta = np.repeat(dtheta, nb, axis=1)
        dz = self._push_forward(dtheta, per_element_columns=1)
        values = [v if self.batch is not None else v[None] for v in self.values]
        out = prog.retrieval.unflatten_tangent(prog.retrieval.forward(dz), values)
        return out if self.batch is not None else tuple(o[0] for o in out)

    def _push_forward(self, dtheta: FloatArray, per_element_columns: int) -> FloatArray:
        """dθ (p, B·r) ↦ [dx; dy] (n+m, B·r), r columns per element (one solve each)."""
        prog = self.program
        n, r, nb = prog.n, per_element_columns, self.x.shape[1]
        dP, dA, db, dc = prog.data_linear(dtheta)
        out = np.full((prog.n + prog.m, dtheta.shape[1]), np.nan)
        ok = self._ok_keys
        if not ok:
            return out
        if self.mode == EmbeddingLSQR.name:
            cols = (np.array(ok)[:, None] * r + np.arange(r)).reshape(-1, r)
            for k, at in zip(ok, cols):
                strategy, op = self._embedding(k)
                dxy, stats = strategy.tangent(op, prog.data_patterns,
                                              None if dP is None else dP[:, at], dA[:, at],
                                              db[:, at], dc[:, at])
                self._derivative.record(k, stats)
                out[:, at] = dxy
            return out
        # every element's columns in one data_rhs: x and y repeated per column
        P_rows, P_cols, A_rows, A_cols = prog.data_patterns
        X, Y = np.repeat(self.x, r, axis=1), np.repeat(self.y, r, axis=1)
        F = data_rhs(X, Y, dP, P_rows, P_cols, dA, A_rows, A_cols, db, dc,
                     P_off=prog.P_off_diagonal)
        F = F.reshape(F.shape[0], nb, r)
        rhs = (F if len(ok) == nb else F[:, ok]).transpose(1, 0, 2)
        duv = self._solve_many(ok, rhs, transpose=False).transpose(1, 0, 2)  # (n+m, b, r)
        cols = (np.array(ok)[:, None] * r + np.arange(r)).ravel()
        out[:n, cols] = -duv[:n].reshape(n, -1)
        out[n:, cols] = -self._apply_d(ok, duv[n:]).reshape(prog.m, -1)
        return out

    def _adjoints(self, G: FloatArray) -> tuple[FloatArray | None, ...]:
        """Cotangents on z = [x; y] through Rᵀ, G (n+m, B, q) (q columns per element; a
        broadcast view will do) ↦ cotangents on the data (P upper, A, b, c) through Jᵀ, each
        (rows, B·q), element k's columns k·q … (k+1)·q − 1; NaN for a failed element.
        Where R reads no entry of y (only primal variables requested), G is zero on y and
        so is DΠ of it: no product."""
        prog, n = self.program, self.program.n
        if self.mode == EmbeddingLSQR.name:
            return self._embedding_adjoints(G)
        y_zero = prog.retrieval.last_column < n
        N, nb, q = G.shape
        ok = self._ok_keys
        every = len(ok) == nb
        rhs = np.empty((len(ok), N, q))
        if ok:
            G_ok = G if every else G[:, ok]
            rhs[:, :n] = G_ok[:n].transpose(1, 0, 2)
            rhs[:, n:] = 0.0 if y_zero else self._apply_d(ok, G_ok[n:]).transpose(1, 0, 2)
        solved = self._solve_many(ok, rhs, transpose=True).transpose(1, 0, 2)  # (n+m, b, q)
        if every:
            r = -solved.reshape(N, nb * q)
        else:
            r = np.full((N, nb, q), np.nan)
            r[:, ok] = -solved
            r = r.reshape(N, nb * q)
        x = self.x if q == 1 else np.repeat(self.x, q, axis=1)  # a failed element's
        y = self.y if q == 1 else np.repeat(self.y, q, axis=1)  # columns of r are NaN
        return data_adjoint(x, y, r, *prog.data_patterns, has_P=prog.P is not None,
                            P_off=prog.P_off_diagonal)

    def _embedding(self, k: int) -> tuple[EmbeddingLSQR, EmbeddingOperator]:
        """Element k's embedding operator M and its LSQR chain (``mode="embedding"``)."""
        if k not in self._embeddings:
            prog = self.program
            P, A, b, c = prog.element_data(self._data, k)
            op = embedding_operator(P, A, b, c, self.x[:, k], self.y[:, k],
                                    self._derivative.projection(k))
            self._embeddings[k] = (EmbeddingLSQR.from_options(self.derivative_options), op)
        return self._embeddings[k]

    @functools.cached_property
    def _embeddings(self) -> dict[int, tuple[EmbeddingLSQR, EmbeddingOperator]]:
        """Each element's embedding operator, built on first use (``mode="embedding"``)."""
        return {}

    def _embedding_adjoints(self, G: FloatArray) -> tuple[FloatArray | None, ...]:
        """:meth:`_adjoints` through Mᵀ, element by element (the reference mode)."""
        prog = self.program
        _, nb, q = G.shape
        rows = [prog.P.indices.size if prog.P is not None else 0, prog.A.indices.size,
                prog.m, prog.n]
        out = [np.full((size, nb, q), np.nan) for size in rows]
        for k in self._ok_keys:
            strategy, op = self._embedding(k)
            grads, stats = strategy.cotangent(op, prog.data_patterns, G[:, k])
            self._derivative.record(k, stats)
            for o, g in zip(out, grads):
                if g is not None:
                    o[:, k] = g
        out = [o.reshape(o.shape[0], nb * q) for o in out]
        return (out[0] if prog.P is not None else None, *out[1:])

    def _pull_to_theta(self, gP: FloatArray | None, gA: FloatArray, gb: FloatArray,
                       gc: FloatArray) -> FloatArray:
        """Cotangents on the data ↦ on θ: the transposed maps Cᵀ (one stacked product)."""
        return self.program.data_transpose(gP, gA, gb, gc)

    def jacobian(self) -> tuple[tuple[FloatArray, ...], ...]:
        """Full blocks d(variable)/d(parameter): ``jac[i][j]`` has shape
        ([B,] *variable_i.shape, *parameter_j.shape).

        One factorisation per element and one multi-column solve: with Jᵀ and one column
        per output entry when there are fewer outputs than parameter entries (reverse),
        with J and one column per parameter entry otherwise (forward)."""
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
        return tuple(blocks)

    def _forward_jacobian(self) -> FloatArray:
        """(K, B, q): J solves with one column per row of θ."""
        prog = self.program
        q, nb = prog.layout.theta_size, self.x.shape[1]
        dz = self._push_forward(np.tile(np.eye(q), (1, nb)), per_element_columns=q)
        return prog.retrieval.forward(dz).reshape(-1, nb, q)

    def _reverse_jacobian(self) -> FloatArray:
        """(K, B, q): Jᵀ solves with one column per output entry."""
        prog = self.program
        g_z = prog.retrieval.matrix.T.toarray()  # (n+m, K): one column per output entry
        nb, K = self.x.shape[1], g_z.shape[1]
        G = np.broadcast_to(g_z[:, None, :], (g_z.shape[0], nb, K))  # the same for each
        g = self._pull_to_theta(*self._adjoints(G))  # (p, B·K)
        return g.reshape(-1, nb, K).transpose(2, 1, 0)

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
