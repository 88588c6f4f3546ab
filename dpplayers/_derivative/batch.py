"""The derivative of a solved batch: J for every element, and how they are solved together.

DΠ_K*(v) is computed at every solved element at once (one call per cone group). In
``direct`` mode, the program's elimination plan (:mod:`.plan`) decides which elements
the batched dense executor takes: small J (once their 2×2 pair pivots, and if need be each
element's inactive inequality rows, are eliminated) are solved by batched LAPACK calls
(:class:`DenseBatch`), which refactorise on every call; any other element's J (larger,
singular, or not solved cleanly there) is factorised once by its mode's strategy
(:mod:`.linear_solvers`) and reused by every later solve. Each element's worst solve
statistics are kept.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.linalg import blas

from .._cached import cached
from .._sparse import data_columns
from .._threads import CPU_COUNT, blas_single_threaded, parallel_map
from ..cones import BatchedProjectionDerivative, ProjectionDerivative
from .banded import BandLayout
from .conditioning import batch_residuals
from .embedding import EmbeddingLSQR, EmbeddingOperator, embedding_operator
from .kkt import KKTOperator, data_adjoint, data_rhs, kkt_operator
from .lifted_direct import LiftedDirect
from .linear_solvers import (
    AbstractLinearSolver,
    Direct,
    SolveStats,
    make_linear_solver,
)
from .pattern import KKTPattern
from .qp_elements import RouteElements
from .tiles import TileFill

FloatArray = npt.NDArray[np.float64]


#: The batched executor takes a batch in chunks of about this many bytes of blocks: they
#: live in per-thread scratch arrays (:mod:`.scratch`), so a chunk's temporaries are not
#: page-faulted in again on every call, and larger chunks pay fewer numpy calls. Measured
#: against 1 MB chunks (``routes.compare``, backward, 15 rounds interleaved, load 4–5):
#: qp50 0.90 at batch 32 and 0.84 at 128, lasso 0.91 at 8 and 0.99–1.01 at 32–128,
#: soc_proj 0.95, ncm 0.71 and eq_lsq 0.71 at 128, lp_inactive 0.92 at 32.
BATCH_DENSE_BYTES = 8 << 20
#: A batched solve whose relative residual is above this goes to ``Direct`` (refinement,
#: singular-J handling) for that element.
BATCH_RESIDUAL_TOL = 1e-10
#: The band LU splits a batch across the cores only in chunks of at least this many
#: elements (each chunk costs ~20 numpy calls of its own) ...
BAND_CHUNK_MIN = 8
#: ... and where the batch's band work (``BandLayout.work`` summed over its elements) is
#: at least this: the chunks' numpy calls hold the GIL, only LAPACK shares the cores.
#: Measured (``band_route.py``, backward, two pooled chunks against one, OMP_NUM_THREADS=1):
#: 1.4–2.6× slower from 18k to 600k in all (entropy terms on 3–100 entries, sparsemax on
#: 25–40, total variation on 20 points, at batches 32–128); mixed from 1.3M to 2.7M
#: (0.81–1.23: sparsemax on 100 entries at 128, MPCs of horizon 8–10, logistic regression
#: on 25 samples and total variation on 100 points at 32); 0.72 for sparsemax on 300
#: entries at 128 (3.8M), 0.6–1.0 for MPCs of horizon 20–40 (7M–36M).
BAND_POOL_WORK = 3e6


@dataclass(frozen=True)
class DenseBatch:
    """The J of several elements solved together: their 2×2 pair pivots eliminated exactly
    (and, with ``drop``, each element's inactive inequality rows:
    :mod:`dpplayers._derivative.inactive_rows`) by array operations over the whole batch,
    then LAPACK's LU on each reduced dense system, with no factorisation kept: every
    solve refactorises; an element whose J is singular, possibly
    near-singular (a probe estimate of its condition: :mod:`dpplayers._derivative.conditioning`) or
    whose solve is not clean is reported with an infinite or large residual (measured on J
    itself) for Direct to redo and, where it is, flag degenerate."""

    pattern: KKTPattern
    values: FloatArray  # (b, nnz): each element's J entries (``KKTPattern.entries`` order)
    drop: npt.NDArray[np.bool_] | None = None  # (b, N): the J indices each element drops
    fill: TileFill | None = None  # D's tiles, where ``values`` leave them out (:mod:`.tiles`)

    @staticmethod
    def chunk(pattern: KKTPattern, order: int | None = None) -> int:
        """How many elements to solve at once (about BATCH_DENSE_BYTES of blocks, at least
        one), for reduced systems of the given order (default: without dropped rows)."""
        per_element = 8 * (pattern.plan.pairs.buffer_size(order) + pattern.indices.size)
        return max(1, BATCH_DENSE_BYTES // per_element)

    def solve(self, rhs: FloatArray, transpose: bool) -> tuple[FloatArray, FloatArray]:
        """rhs (b, N, q) ↦ (z, relative residual per element; inf where J is singular)."""
        plan = self.pattern.plan
        if self.drop is None:
            z, res_sq = plan.pairs.solve(self.values, rhs, transpose, fill=self.fill)
        else:
            z, res_sq = plan.inactive.solve(plan.pairs, self.values, rhs, transpose, self.drop)
        # squared norms by column (np.linalg.norm costs several calls each); a non-finite z
        # makes its residual non-finite too (every entry of z meets an equation)
        if res_sq.size == 1:  # one element, one column (a batch-1 vjp): one BLAS dot, floats
            flat = rhs.reshape(-1)
            ratio_1 = float(res_sq[0, 0]) / max(float(blas.ddot(flat, flat)), 1e-300)
            return z, np.array([math.sqrt(ratio_1) if ratio_1 <= math.inf else math.inf])
        return z, batch_residuals(res_sq, rhs)


class BatchDerivative:
    """J at each solved element of a batch (``keys``: their places in it) and its solves.

    ``program`` gives the cones, J's pattern and the data patterns (a ``CompiledProblem``);
    ``data`` is the batch's (P data, A data, b, c); ``stats`` the caller's per-element list
    of :class:`SolveStats` (None until solved), updated in place."""

    def __init__(self, program: Any, data: tuple, x: FloatArray, y: FloatArray,
                 s: FloatArray, keys: list[int], mode: str, options: dict[str, Any],
                 stats: list[SolveStats | None], route: RouteElements | None = None) -> None:
        self.program, self.data, self.x, self.y, self.s = program, data, x, y, s
        self.route = route  # the dense QP route's elements with kept factors (qp_elements)
        self.keys, self.mode, self.options, self.stats = keys, mode, options, stats
        self.factors: dict[int, tuple[AbstractLinearSolver, Any, KKTOperator]] = {}
        self._projections: dict[int, ProjectionDerivative] = {}
        self._batch: tuple[BatchedProjectionDerivative, dict[int, int]] | None = None

    # -- the chain's middle stage: data tangents ↔ (dx, dy) through J ----------------------

    def forward(self, data_tangents: tuple[FloatArray | None, ...]) -> FloatArray:
        """(dP, dA, db, dc), each (rows, B·r) with r columns per element ↦ [dx; dy]
        (n+m, B·r): dF from the data, [du; dv] = −J⁻¹ dF, dx = du, dy = DΠ dv (NaN for
        a failed element)."""
        prog = self.program
        dP, dA, db, dc = data_tangents
        n, nb = prog.n, self.x.shape[1]
        r = dA.shape[1] // nb
        out = np.full((n + prog.m, dA.shape[1]), np.nan)
        ok = self.keys
        if not ok:
            return out
        # every element's columns in one data_rhs: x and y repeated per column
        P_rows, P_cols, A_rows, A_cols = prog.data_patterns
        X, Y = np.repeat(self.x, r, axis=1), np.repeat(self.y, r, axis=1)
        F = data_rhs(X, Y, dP, P_rows, P_cols, dA, A_rows, A_cols, db, dc,
                     P_off=prog.P_off_diagonal)
        F = F.reshape(F.shape[0], nb, r)
        rhs = (F if len(ok) == nb else F[:, ok]).transpose(1, 0, 2)
        duv = self.solve(ok, rhs, transpose=False).transpose(1, 0, 2)  # (n+m, b, r)
        cols = (np.array(ok)[:, None] * r + np.arange(r)).ravel()
        out[:n, cols] = -duv[:n].reshape(n, -1)
        out[n:, cols] = -self.apply_projection(ok, duv[n:]).reshape(prog.m, -1)
        return out

    def backward(self, G: FloatArray) -> tuple[FloatArray | None, ...]:
        """Cotangents on [x; y], G (n+m, B, q) (q columns per element; a broadcast view
        will do) ↦ cotangents on the data (P upper, A, b, c) through Jᵀ, each (rows, B·q),
        element k's columns k·q … (k+1)·q − 1; NaN for a failed element. Where R reads no
        entry of y (only primal variables requested), G is zero on y and so is DΠ of it:
        no product."""
        prog = self.program
        n = prog.n
        y_zero = prog.retrieval.last_column < n
        N, nb, q = G.shape
        ok = self.keys
        every = len(ok) == nb
        rhs = np.empty((len(ok), N, q))
        if ok:
            G_ok = G if every else G[:, ok]
            rhs[:, :n] = G_ok[:n].transpose(1, 0, 2)
            rhs[:, n:] = 0.0 if y_zero else self.apply_projection(ok, G_ok[n:]).transpose(1, 0, 2)
        solved = self.solve(ok, rhs, transpose=True).transpose(1, 0, 2)  # (n+m, b, q)
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

    def element(self, k: int) -> tuple[AbstractLinearSolver, Any, KKTOperator]:
        """Element k's strategy, its factorisation (built on first use) and J."""
        if k not in self.factors:
            prog = self.program
            P, A = prog.element_matrices(self.data, k)
            op = kkt_operator(P, A, self.y[:, k], self.s[:, k], prog.cones, prog.kkt_pattern,
                              prog.dual_cone, self.projection(k))
            solver = self._strategy
            self.factors[k] = (solver, solver.init(op), op)
        return self.factors[k]

    @cached
    def _strategy(self) -> AbstractLinearSolver:
        """The mode's solver for every element; Direct learns the program's auxiliaries."""
        solver = make_linear_solver(self.mode, self.options)
        if isinstance(solver, Direct):
            solver = dataclasses.replace(solver, auxiliaries=self.program.auxiliaries)
            if self.program.kkt_pattern.lifted is not None:  # large SOC blocks: J̃
                return LiftedDirect(solver)
        return solver

    def _solve_one(self, k: int, rhs: FloatArray, transpose: bool) -> FloatArray:
        solver, state, _ = self.element(k)
        z, stats = solver.compute(state, rhs, transpose)
        self.record(k, stats)
        return z

    def record(self, k: int, stats: SolveStats) -> None:
        """Keep element k's worst solve statistics."""
        old = self.stats[k]
        if old is None:
            self.stats[k] = stats
        elif stats.residual >= old.residual or stats.degenerate or stats.fell_back:
            self.stats[k] = SolveStats(
                max(stats.residual, old.residual), stats.iterations, stats.converged,
                stats.fell_back or old.fell_back, stats.degenerate or old.degenerate)

    def solve(self, keys: list[int], rhs: FloatArray, transpose: bool) -> FloatArray:
        """Element keys[i]'s system for right-hand sides rhs[i] (len(keys), n+m, q): small J
        in :class:`DenseBatch` calls (per-element Python around a factorisation costs
        several times a small LU), any element it does not solve cleanly (and every element
        of a larger J, or one already factorised) by its own factorisation."""
        out = np.empty_like(rhs)
        todo = [i for i, k in enumerate(keys) if k not in self.factors]
        done = []
        if self.route is not None and todo:  # [dense QP route] by its kept factors (qp_elements)
            done = self.route.solve(keys, rhs, transpose, todo, out, self.record)
            todo = sorted(set(todo).difference(done))
        if todo and self.band is not None:
            banded = self._band_solve(keys, rhs, transpose, todo, out)  # [band LU]
            done = [*done, *banded]
            todo = sorted(set(todo).difference(banded))
        if self.mode == "direct" and todo:
            pattern = self.batch_pattern
            lifted = pattern.lift is not None

            def run(chunk: tuple[list[int], Callable[[], DenseBatch]],
                    ) -> tuple[list[int], FloatArray, FloatArray]:
                where, build = chunk
                batch = build()
                rows = [todo[j] for j in where]
                # rhs as it is only where the chunk is every element in order (chunks of
                # elements that drop rows come in order of their reduced order)
                part = rhs if rows == list(range(len(keys))) else rhs[rows]
                if lifted:  # J̃ (:mod:`.lifting`): rhs 0 on its extra unknowns, all of
                    part = np.concatenate([part, np.zeros((len(rows), pattern.extra,  # them
                                                           rhs.shape[2]))], 1)  # in its order
                    part = part.take(pattern.order, 1)
                z, residual = batch.solve(part, transpose)
                if lifted:
                    z = z.take(pattern.position, 1)
                return rows, z, residual

            chunks = self.dense_batches([keys[i] for i in todo])
            # on the cores where BLAS keeps to one thread (see dpplayers._threads); the
            # blocks live in per-thread scratch arrays
            pooled = len(chunks) > 1 and blas_single_threaded()  # (asking costs ~10 µs)
            done += self._keep_clean(parallel_map(run, chunks, CPU_COUNT if pooled else 1),
                                     keys, out)
        if len(done) < len(keys):
            for i in sorted(set(range(len(keys))).difference(done)):
                out[i] = self._solve_one(keys[i], rhs[i], transpose)
        return out

    @property
    def band(self) -> BandLayout | None:
        """J's band layout where ``direct`` mode takes the band LU (:mod:`.banded`): not
        for a program with auxiliaries an element can leave free (J is singular there; the
        batched executor and Direct drop them)."""
        if self.mode != "direct" or self.program.free_auxiliaries is not None:
            return None
        return self.program.kkt_pattern.band

    def _band_solve(self, keys: list[int], rhs: FloatArray, transpose: bool, todo: list[int],
                    out: FloatArray) -> list[int]:
        """Elements keys[i], i in ``todo``, by J's band LU, in chunks of at most
        BATCH_DENSE_BYTES of band storage, one per core at least where BLAS keeps to one
        thread (LAPACK runs without the GIL: :mod:`dpplayers._lapack`); the places in
        ``keys`` of those it solved cleanly (their answers written into ``out``)."""
        pattern, band = self.program.kkt_pattern, self.band
        pooled = len(todo) >= 2 * BAND_CHUNK_MIN and band.work * len(todo) >= BAND_POOL_WORK \
            and blas_single_threaded()
        count = max(-(-8 * band.order * band.ldab * len(todo) // BATCH_DENSE_BYTES),
                    min(CPU_COUNT, len(todo) // BAND_CHUNK_MIN) if pooled else 1)
        step = -(-len(todo) // count)

        def run(chunk: list[int]) -> tuple[list[int], FloatArray, FloatArray]:
            ks = [keys[i] for i in chunk]
            values = self._entries(pattern, ks, self._block_columns(pattern, ks))
            part = rhs if chunk == list(range(len(keys))) else rhs[chunk]
            z, residual = band.solve(values, part, transpose, pattern.plan.pairs.limit)
            return chunk, z, residual

        chunks = [todo[i : i + step] for i in range(0, len(todo), step)]
        return self._keep_clean(parallel_map(run, chunks, CPU_COUNT if pooled else 1), keys, out)

    def _keep_clean(self, solved: list[tuple[list[int], FloatArray, FloatArray]],
                    keys: list[int], out: FloatArray) -> list[int]:
        """From a batched executor's chunks (places in ``keys``, answers, residuals), each
        answer whose relative residual is within BATCH_RESIDUAL_TOL written into ``out``
        (its first rows: J̃'s extra unknowns dropped) and recorded; their places."""
        done = []
        for rows, z, residual in solved:
            for j, i in enumerate(rows):
                if residual[j] <= BATCH_RESIDUAL_TOL:
                    out[i] = z[j, : out.shape[1]]
                    done.append(i)
                    self.record(keys[i], SolveStats(float(residual[j]), 0, True))
        return done

    def _block_columns(self, pattern: KKTPattern, keys: list[int]) -> FloatArray:
        """DΠ's block values as ``pattern`` reads them, (values, len(keys)), for the given
        elements (the batch's own array where they are all of it, in order)."""
        D, place = self.projections()
        values = pattern.d_values(D)
        where = [place[k] for k in keys]
        return values if where == list(range(D.count)) else values[:, where]

    def _entries(self, pattern: KKTPattern, keys: list[int], D_values: FloatArray,
                 tiled: bool = False, A_data: FloatArray | None = None) -> FloatArray:
        """The given elements' J (J̃) entries as ``pattern`` orders them, (nnz, len(keys));
        with ``tiled``, those outside D's tiles. ``A_data``: their A data, where the caller
        has taken it already."""
        P_data = data_columns(self.data[0], keys) if self.program.P is not None else None
        if A_data is None:
            A_data = data_columns(self.data[1], keys)
        return pattern.entries(P_data, A_data, D_values, tiled)

    @property
    def batched_dense(self) -> bool:
        """Whether :meth:`dense_batches` can take any element (see there)."""
        return self.mode == "direct" and \
            self.batch_pattern.plan.smallest_batched_order <= self.dense_limit

    @cached
    def batch_pattern(self) -> KKTPattern:
        """The pattern :class:`DenseBatch` solves on: J̃'s where J has lifted SOC blocks
        (:mod:`.lifting`; fewer entries to assemble and gather), else J's."""
        pattern = self.program.kkt_pattern
        return pattern.batch_lifted or pattern

    @property
    def dense_limit(self) -> int:
        """The largest LU order :class:`DenseBatch` takes: the plan of J's own pattern says
        (a lifted J̃ is sparser than the J whose dense LU it stands for)."""
        return self.program.kkt_pattern.plan.batched_limit

    def dense_batches(self, keys: list[int]) -> list[tuple[list[int], Callable[[], DenseBatch]]]:
        """The elements that :class:`DenseBatch` takes, in chunks of ~BATCH_DENSE_BYTES
        (larger temporaries are handed back to the OS when freed and page-faulted in again
        on every call), each with its elements' places in ``keys`` and what builds its
        DenseBatch (built where it is solved: on the thread pool): all of them when the
        order of their LU (J's after pair elimination, less S's diagonal pivots) is at most
        the plan's ``batched_limit``, else those whose inactive inequality rows bring it
        there."""
        if not self.batched_dense:
            return []
        plan = self.batch_pattern.plan
        # S's order (what the blocks hold) against the limits on the LU's, less S's diagonal pivots
        order, limit = plan.pairs.reduced_order, self.dense_limit + plan.pairs.diagonal
        compact = plan.inactive is not None and \
            order > self.program.kkt_pattern.plan.compact_above + plan.pairs.diagonal
        places = list(range(len(keys)))
        D_values = self._block_columns(self.batch_pattern, keys)
        drop, free = None, self._free_auxiliaries(D_values)
        if compact or free is not None:
            drop = plan.inactive.dropped(D_values)
            if free is not None:
                drop |= free
            orders = order - drop[:, plan.pairs.rest].sum(axis=1)
            taken = np.flatnonzero(orders <= limit)
            # by order, so that each chunk's elements, padded to its largest, are alike
            taken = taken[np.argsort(orders[taken], kind="stable")]
            keys, D_values, drop = [keys[i] for i in taken], D_values[:, taken], drop[taken]
            places = taken.tolist()
            order = int(orders[taken].max(initial=0))
        step = 1 if len(keys) <= 1 else DenseBatch.chunk(self.batch_pattern, order)
        return [(places[i : i + step],
                 functools.partial(self._dense_batch, keys[i : i + step], D_values[:, i : i + step],
                                   None if drop is None else drop[i : i + step]))
                for i in range(0, len(keys), step)]

    def _free_auxiliaries(self, D_values: FloatArray) -> npt.NDArray[np.bool_] | None:
        """(b, J̃'s order): the program's auxiliaries each element leaves free (they meet
        only its inactive rows: :class:`~.inactive_rows.FreeAuxiliaries`), for D's block
        values (entries, b); None where no element has one the batch can drop. J is
        singular there; dropped with the inactive rows, z_t = 0, as ``Direct`` does."""
        free = self.program.free_auxiliaries
        return None if free is None else free.dropped(D_values)

    def _dense_batch(self, keys: list[int], D_values: FloatArray,
                     drop: npt.NDArray[np.bool_] | None) -> DenseBatch:
        pattern = self.batch_pattern
        A_data = data_columns(self.data[1], keys)
        # D's large blocks as tiles, where the pattern has them (:mod:`.tiles`)
        fill = pattern.tile_fill(A_data, D_values) if drop is None else None
        values = self._entries(pattern, keys, D_values, tiled=fill is not None, A_data=A_data)
        return DenseBatch(pattern, values.T, drop, fill)

    def projection(self, k: int) -> ProjectionDerivative:
        """DΠ_K*(v) at element k's solution alone (for its own factorisation)."""
        if k not in self._projections:
            D, place = self.projections()
            self._projections[k] = D.element(place[k])
        return self._projections[k]

    def projections(self) -> tuple[BatchedProjectionDerivative, dict[int, int]]:
        """DΠ_K*(v) at every solved element's solution as one batched operator (computed
        once, one call per cone group), and each element's place in it."""
        if self._batch is None:
            ok = self.keys
            every = len(ok) == self.y.shape[1]
            y = self.y if every else self.y[:, ok]  # y = Π_K*(y − s) up to solver accuracy:
            s = self.s if every else self.s[:, ok]  # a root seed
            D = self.program.dual_cone.dproject_batch(y - s, near=y)
            self._batch = (D, {k: i for i, k in enumerate(ok)})
        return self._batch

    def apply_projection(self, keys: list[int], G: FloatArray) -> FloatArray:
        """DΠ_k G[:, i] for k = keys[i], G (m, len(keys), q): one batched product (from
        DΠ's block values where the batched dense solve needs them anyway)."""
        D, place = self.projections()
        where = [place[k] for k in keys]
        by_values = self.batched_dense and self.batch_pattern.lift is None  # J̃: g, x̄, …
        if where == list(range(D.count)):
            return D.mv(G, by_values)
        full = np.zeros((G.shape[0], D.count, G.shape[2]))
        full[:, where] = G
        return D.mv(full, by_values)[:, where]


class EmbeddingBatch:
    """``mode="embedding"``: the chain's middle stage through the self-dual embedding's M,
    solved by LSQR element by element (the reference mode, :mod:`.embedding`); DΠ and the
    per-element statistics come from the :class:`BatchDerivative` it wraps."""

    def __init__(self, kkt: BatchDerivative) -> None:
        self.kkt = kkt
        self.strategy = EmbeddingLSQR.from_options(kkt.options)
        self.operators: dict[int, EmbeddingOperator] = {}

    def operator(self, k: int) -> EmbeddingOperator:
        """Element k's M, built on first use."""
        if k not in self.operators:
            kkt = self.kkt
            P, A, b, c = kkt.program.element_data(kkt.data, k)
            self.operators[k] = embedding_operator(P, A, b, c, kkt.x[:, k], kkt.y[:, k],
                                                   kkt.projection(k))
        return self.operators[k]

    def forward(self, data_tangents: tuple[FloatArray | None, ...]) -> FloatArray:
        """As :meth:`BatchDerivative.forward`, through M."""
        kkt, prog = self.kkt, self.kkt.program
        dP, dA, db, dc = data_tangents
        nb = kkt.x.shape[1]
        r = dA.shape[1] // nb
        out = np.full((prog.n + prog.m, dA.shape[1]), np.nan)
        for k in kkt.keys:
            at = slice(k * r, (k + 1) * r)
            dxy, stats = self.strategy.tangent(self.operator(k), prog.data_patterns,
                                               None if dP is None else dP[:, at], dA[:, at],
                                               db[:, at], dc[:, at])
            kkt.record(k, stats)
            out[:, at] = dxy
        return out

    def backward(self, G: FloatArray) -> tuple[FloatArray | None, ...]:
        """As :meth:`BatchDerivative.backward`, through Mᵀ."""
        kkt, prog = self.kkt, self.kkt.program
        _, nb, q = G.shape
        rows = [prog.P.indices.size if prog.P is not None else 0, prog.A.indices.size,
                prog.m, prog.n]
        out = [np.full((size, nb, q), np.nan) for size in rows]
        for k in kkt.keys:
            grads, stats = self.strategy.cotangent(self.operator(k), prog.data_patterns,
                                                   G[:, k])
            kkt.record(k, stats)
            for o, g in zip(out, grads):
                if g is not None:
                    o[:, k] = g
        out = [o.reshape(o.shape[0], nb * q) for o in out]
        return (out[0] if prog.P is not None else None, *out[1:])


def make_strategy(mode: str, options: dict[str, Any]) -> AbstractLinearSolver | EmbeddingLSQR:
    """The derivative mode's strategy: a solver for J, or the embedding's LSQR chain;
    raises ValueError on a bad mode or option (the forward pass checks them early)."""
    if mode == EmbeddingLSQR.name:
        return EmbeddingLSQR.from_options(options)
    return make_linear_solver(mode, options)
