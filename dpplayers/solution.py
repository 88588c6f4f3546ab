"""A solved batch: values, per-element status, and the derivative chain C → J⁻¹ → R.

``jvp`` pushes parameter tangents forward: dθ ↦ d(data) = C dθ ↦ dF ↦ [du; dv] = −J⁻¹ dF
↦ (dx, dy) ↦ R (dx, dy). ``vjp`` runs the transposed chain Rᵀ → J⁻ᵀ → (∂data)ᵀ → Cᵀ. The
C maps, R and the data adjoint act on the whole batch at once. The solves with J are
lazy (on the first derivative request): small J (order ≤ BATCH_DENSE_MAX once their 2×2
pair pivots, and if need be each element's inactive inequality rows, are eliminated;
direct mode) are solved by batched LAPACK calls for the whole batch (a single element
included), which refactorise on every call; any other element's J (larger, or singular)
is factorised once and reused by every later vjp, jvp and ``jacobian`` call. The forward
pass that builds a Solution is :mod:`dpplayers.forward`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .cones import BatchedProjectionDerivative
from .derivative import data_adjoint, data_rhs, kkt_operator
from .errors import DerivativeError
from .linear_solvers import (
    BATCH_DENSE_MAX,
    BATCH_RESIDUAL_TOL,
    DenseBatch,
    SolveStats,
    make_linear_solver,
)
from .solvers import Status

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
    _factor: dict[int, tuple[Any, Any]] = field(default_factory=dict, repr=False)
    _dprojections: dict[int, Any] = field(default_factory=dict, repr=False)
    _dbatch: tuple[BatchedProjectionDerivative, dict[int, int]] | None = field(default=None,
                                                                               repr=False)
    stats: list[SolveStats | None] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.stats = [None] * len(self.status)  # one slot per element (threads write slots)

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        return np.array([s.ok for s in self.status])

    @property
    def degenerate(self) -> npt.NDArray[np.bool_]:
        """Per element: a derivative solve met a singular J (least-squares answer)."""
        return np.array([bool(s and s.degenerate) for s in self.stats])

    @property
    def fell_back(self) -> npt.NDArray[np.bool_]:
        """Per element: an iterative derivative solve stalled and Direct answered."""
        return np.array([bool(s and s.fell_back) for s in self.stats])

    @property
    def residual(self) -> FloatArray:
        """Per element: the largest relative residual of its derivative solves (NaN if none)."""
        return np.array([s.residual if s else np.nan for s in self.stats])

    # -- the derivative ----------------------------------------------------------------

    def _element(self, k: int):
        if k not in self._factor:
            prog = self.program
            P, A = prog.element_matrices(self._data, k)
            op = kkt_operator(P, A, self.y[:, k], self.s[:, k], prog.cones, prog.kkt_pattern,
                              prog.dual_cone, self._d_projection(k))
            solver = make_linear_solver(self.mode, self.derivative_options)
            self._factor[k] = (solver, solver.init(op), op)
        return self._factor[k]

    def _solve(self, k: int, rhs: FloatArray, transpose: bool) -> FloatArray:
        solver, state, _ = self._element(k)
        z, stats = solver.compute(state, rhs, transpose)
        self._record(k, stats)
        return z

    def _record(self, k: int, stats: SolveStats) -> None:
        """Keep element k's worst solve statistics."""
        old = self.stats[k]
        if old is None or stats.residual >= old.residual or stats.degenerate or stats.fell_back:
            self.stats[k] = SolveStats(
                max(stats.residual, old.residual if old else 0.0), stats.iterations,
                stats.converged, stats.fell_back or bool(old and old.fell_back),
                stats.degenerate or bool(old and old.degenerate))

    def _solve_many(self, rhs: dict[int, FloatArray], transpose: bool) -> dict[int, FloatArray]:
        """Element k's system for right-hand side rhs[k], for every k given: small J in
        :class:`DenseBatch` calls (per-element Python around a factorisation costs several
        times a small LU), any element it does not solve cleanly (and every element of a
        larger J) by its own factorisation."""
        keys = [k for k in rhs if k not in self._factor]
        out: dict[int, FloatArray] = {}
        if self.mode == "direct" and keys:
            for batch in self._dense_batches(keys):
                chunk = batch.keys
                z, residual = batch.solve(np.stack([rhs[k] for k in chunk]), transpose)
                for i, k in enumerate(chunk):
                    if residual[i] <= BATCH_RESIDUAL_TOL:
                        out[k] = z[i]
                        self._record(k, SolveStats(float(residual[i]), 0, True))
        for k, r in rhs.items():
            if k not in out:
                out[k] = self._solve(k, r, transpose)
        return out

    def _dense_batches(self, keys: list[int]) -> Iterator[DenseBatch]:
        """The elements that :class:`DenseBatch` takes, in chunks of ~BATCH_DENSE_BYTES
        (larger temporaries are handed back to the OS when freed and page-faulted in again
        on every call): all of them when J's order after pair elimination is at most
        BATCH_DENSE_MAX, else those whose inactive inequality rows bring it there."""
        prog = self.program
        pattern = prog.kkt_pattern
        order = pattern.pair_pivots.reduced_order
        inactive = pattern.inactive_rows
        if order > BATCH_DENSE_MAX and inactive is None:
            return
        D, place = self._d_batch()
        D_values = D.block_values()
        where = [place[k] for k in keys]
        if where != list(range(D.count)):
            D_values = D_values[:, where]
        drop = None
        if order > BATCH_DENSE_MAX:
            drop = inactive.dropped(D_values)
            orders = order - drop[:, pattern.pair_pivots.rest].sum(axis=1)
            taken = np.flatnonzero(orders <= BATCH_DENSE_MAX)
            keys, D_values, drop = [keys[i] for i in taken], D_values[:, taken], drop[taken]
            order = int(orders[taken].max(initial=0))
        step = DenseBatch.chunk(pattern, order)
        for i in range(0, len(keys), step):
            at = slice(i, i + step)
            P_data = _columns(self._data[0], keys[at]) if prog.P is not None else None
            values = pattern.values(P_data, _columns(self._data[1], keys[at]), D_values[:, at])
            yield DenseBatch.assemble(pattern, values.T, None if drop is None else drop[at],
                                      keys[at])

    def _d_projection(self, k: int):
        """DΠ_K*(v) at element k's solution alone (for its own factorisation)."""
        if k not in self._dprojections:
            D, place = self._d_batch()
            self._dprojections[k] = D.element(place[k])
        return self._dprojections[k]

    def _d_batch(self) -> tuple[BatchedProjectionDerivative, dict[int, int]]:
        """DΠ_K*(v) at every solved element's solution as one batched operator (computed
        once, one call per cone group), and each element's place in it."""
        if self._dbatch is None:
            ok = [k for k, st in enumerate(self.status) if st.ok]
            y = self.y[:, ok]  # y = Π_K*(y − s) up to solver accuracy: a root seed
            D = self.program.dual_cone.dproject_batch(y - self.s[:, ok], near=y)
            self._dbatch = (D, {k: i for i, k in enumerate(ok)})
        return self._dbatch

    def _apply_d(self, keys: list[int], G: FloatArray) -> FloatArray:
        """DΠ_k G[:, i] for k = keys[i], G (m, len(keys), q): one batched product."""
        D, place = self._d_batch()
        where = [place[k] for k in keys]
        if where == list(range(D.count)):
            return D.mv(G)
        full = np.zeros((G.shape[0], D.count, G.shape[2]))
        full[:, where] = G
        return D.mv(full)[:, where]

    def vjp(self, *cotangents: npt.ArrayLike | None) -> tuple[FloatArray, ...]:
        """Cotangents on the requested variables ↦ cotangents on the parameters."""
        prog = self.program
        nb = self.x.shape[1]
        cts = self._check_outputs(cotangents, "cotangent")
        values = [v if self.batch is not None else v[None] for v in self.values]
        g_out = prog.retrieval.flat_cotangent(cts, values, nb)
        g_z = prog.retrieval.transpose(g_out)  # (n+m, B)
        g_theta = self._pull_to_theta(*self._adjoints({k: g_z[:, k : k + 1]
                                                       for k in range(nb)}))
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
        out = prog.retrieval.unflatten_tangent(np.asarray(prog.retrieval.matrix @ dz), values)
        return out if self.batch is not None else tuple(o[0] for o in out)

    def _push_forward(self, dtheta: FloatArray, per_element_columns: int) -> FloatArray:
        """dθ (p, B·r) ↦ [dx; dy] (n+m, B·r), r columns per element (one solve each)."""
        prog = self.program
        n, r = prog.n, per_element_columns
        dP, dA, db, dc = prog.data_linear(dtheta)
        out = np.full((prog.n + prog.m, dtheta.shape[1]), np.nan)
        ok = [k for k in range(self.x.shape[1]) if self.status[k].ok]
        # every element's columns in one data_rhs: x and y repeated per column
        P_rows, P_cols, A_rows, A_cols = prog.data_patterns
        X, Y = np.repeat(self.x, r, axis=1), np.repeat(self.y, r, axis=1)
        F = data_rhs(X, Y, dP, P_rows, P_cols, dA, A_rows, A_cols, db, dc)
        rhs = {k: F[:, k * r : (k + 1) * r] for k in ok}
        solved = self._solve_many(rhs, transpose=False)
        if solved:
            keys = list(solved)
            duv = np.stack([solved[k] for k in keys], axis=1)  # (n+m, b, r)
            cols = (np.array(keys)[:, None] * r + np.arange(r)).ravel()
            out[:n, cols] = -duv[:n].reshape(n, -1)
            out[n:, cols] = -self._apply_d(keys, duv[n:]).reshape(prog.m, -1)
        return out

    def _adjoints(self, g_z: dict[int, FloatArray]) -> tuple[FloatArray | None, ...]:
        """Cotangents on z = [x; y], (n+m, q_k) for each element k given ↦ cotangents on
        the data (P upper, A, b, c) through Jᵀ, each (rows, Σ q_k): the elements' columns
        side by side in the order given; NaN for a failed element."""
        prog, n = self.program, self.program.n
        ok = [k for k in g_z if self.status[k].ok]
        if len({g_z[k].shape[1] for k in ok}) == 1:  # one batched DΠ product for all
            Dg = self._apply_d(ok, np.stack([g_z[k][n:] for k in ok], axis=1))
            rhs = {k: np.concatenate([g_z[k][:n], Dg[:, i]]) for i, k in enumerate(ok)}
        else:
            rhs = {k: np.concatenate([g_z[k][:n], self._d_projection(k).mv(g_z[k][n:])])
                   for k in ok}
        solved = self._solve_many(rhs, transpose=True)
        width = [g.shape[1] for g in g_z.values()]
        r = np.full((n + prog.m, sum(width)), np.nan)
        x, y = np.full((n, r.shape[1]), np.nan), np.full((prog.m, r.shape[1]), np.nan)
        start = 0
        for (k, g), q in zip(g_z.items(), width):
            if k in solved:  # one data_adjoint for every column, not one per element
                r[:, start : start + q] = -solved[k]
                x[:, start : start + q] = self.x[:, k : k + 1]
                y[:, start : start + q] = self.y[:, k : k + 1]
            start += q
        return data_adjoint(x, y, r, *prog.data_patterns, has_P=prog.P is not None)

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
        p, nb, K = prog.layout.size, self.x.shape[1], prog.retrieval.matrix.shape[0]
        flat = self._reverse_jacobian() if K < p else self._forward_jacobian()  # (K, B, p)
        rows = prog.layout.log_rows()
        if rows.size:
            flat[:, :, rows] /= self._raw_theta[rows].T[None]
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
        """(K, B, p): J solves with one column per parameter entry."""
        prog = self.program
        p, nb = prog.layout.size, self.x.shape[1]
        dz = self._push_forward(np.tile(np.eye(p), (1, nb)), per_element_columns=p)
        return np.asarray(prog.retrieval.matrix @ dz).reshape(-1, nb, p)

    def _reverse_jacobian(self) -> FloatArray:
        """(K, B, p): Jᵀ solves with one column per output entry."""
        prog = self.program
        g_z = prog.retrieval.matrix.T.toarray()  # (n+m, K): one column per output entry
        nb, K = self.x.shape[1], g_z.shape[1]
        g = self._pull_to_theta(*self._adjoints({k: g_z for k in range(nb)}))  # (p, B·K)
        return g.reshape(-1, nb, K).transpose(2, 1, 0)

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


def _columns(data: FloatArray, keys: list[int]) -> FloatArray:
    """The given elements' columns of a data array (one shared column when constant)."""
    return data[:, keys] if data.shape[1] > 1 else np.repeat(data, len(keys), 1)
