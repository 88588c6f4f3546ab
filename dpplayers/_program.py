"""The compiled program: the compile stage's output bound to a solver and a derivative.

``compile`` runs the compile stage (:mod:`._compile.canonical`: DPP check, quad-form
lifting, cvxpy's canonicalisation, θ's layout, the affine maps C and the retrieval R) once.
``CompiledProblem.solve`` runs the solve stage (:mod:`._forward`: θ → C θ̃ → SCS or
Clarabel, :mod:`._solve.backends`) and returns a :class:`~._solution.Solution`, whose
``vjp``/``jvp`` run the derivative stage (:mod:`._derivative`).
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from ._cache import Uncacheable, cached, fingerprint
from ._compile.affine_maps import AffineMap, StackedMaps
from ._compile.canonical import CanonicalProgram, canonicalize
from ._derivative.elimination import Auxiliaries
from ._derivative.inactive_rows import FreeAuxiliaries
from ._derivative.kkt import kkt_pattern
from ._derivative.pattern import KKTPattern
from ._distributed import ShippedProgram, check_executor
from ._distributed import derive as distributed_derive
from ._distributed import solve as distributed_solve
from ._forward import ElementRunner, SolveCall, solve_compiled
from ._solution import Solution
from ._solve.backends import AbstractConeSolver, make_solver
from ._sparse import data_column
from .cones import ProductCone

FloatArray = npt.NDArray[np.float64]

#: Derivative modes accepted by ``compile(mode=...)`` and ``solver_args={"mode": ...}``.
MODES = ("direct", "lsqr", "lsmr", "dense", "embedding")
SOLVERS = ("SCS", "CLARABEL")


@dataclass(frozen=True)
class CompiledProblem(CanonicalProgram):
    """A compiled problem: stage 1's maps C_P, C_A, C_b, C_c, cones K and retrieval R
    (:class:`~._compile.canonical.CanonicalProgram`), bound to its solver backend."""

    problem: cp.Problem = field(repr=False)
    solver: str
    gp: bool
    mode: str
    compile_seconds: float
    backend: AbstractConeSolver = field(repr=False, compare=False)

    def solve(self, *values: npt.ArrayLike, solver_args: dict | None = None,
              warm_start: object | None = None, on_failure: str = "raise",
              inaccurate: str = "warn", executor: Any = None,
              chunksize: int | None = None) -> Solution:
        """Solve for one set of parameter values or a batch; returns a :class:`Solution`.

        Values come in the order of ``parameters``; any of them may carry a leading batch
        axis (unbatched ones broadcast). ``solver_args`` go to the solver (SCS or Clarabel
        settings, ``eps`` for both SCS tolerances, ``mode`` for the derivative). With
        ``on_failure="nan"`` a failed element is NaN-filled and flagged in ``status``
        instead of raising :class:`SolverError`. An element that stopped short of its
        tolerances (iteration limit, reduced accuracy) keeps its point with an
        :class:`InaccurateSolutionWarning`; ``inaccurate="fail"`` makes it a failure.

        ``executor`` (any ``concurrent.futures.Executor``, or a ``dask.distributed.Client``)
        solves the batch there in chunks of ``chunksize`` elements (default
        ceil(B / (4 · workers))), the program shipped once per worker; ``None``: here, on
        a thread pool. Results, statuses, warnings and errors are the same either way
        (:mod:`dpplayers._distributed`).
        """
        run = (None if executor is None
               else self._runner(executor, chunksize, solver_args, inaccurate, None)[0])
        return solve_compiled(self, values, solver_args, warm_start, on_failure, inaccurate, run)

    def solve_and_vjp(self, *values: npt.ArrayLike, cotangents: Sequence[npt.ArrayLike | None],
                      solver_args: dict | None = None, warm_start: object | None = None,
                      on_failure: str = "raise", inaccurate: str = "warn", executor: Any = None,
                      chunksize: int | None = None) -> tuple[Solution, tuple[FloatArray, ...]]:
        """Solve and pull ``cotangents`` (one per requested variable, batched like the
        values) back in one call: ``(solution, solution.vjp(*cotangents))``.

        With an ``executor`` each chunk is differentiated on its worker right after its
        solve, so factorisations never travel; other arguments as for :meth:`solve`."""
        derivative = ("vjp", tuple(cotangents))
        run, product = self._runner(executor, chunksize, solver_args, inaccurate, derivative)
        sol = solve_compiled(self, values, solver_args, warm_start, on_failure, inaccurate, run)
        return sol, self._product(sol, derivative, product)

    def solve_and_jvp(self, *values: npt.ArrayLike, tangents: Sequence[npt.ArrayLike | None],
                      solver_args: dict | None = None, warm_start: object | None = None,
                      on_failure: str = "raise", inaccurate: str = "warn", executor: Any = None,
                      chunksize: int | None = None) -> tuple[Solution, tuple[FloatArray, ...]]:
        """Solve and push ``tangents`` (one per parameter) forward in one call:
        ``(solution, solution.jvp(*tangents))``; see :meth:`solve_and_vjp`."""
        derivative = ("jvp", tuple(tangents))
        run, product = self._runner(executor, chunksize, solver_args, inaccurate, derivative)
        sol = solve_compiled(self, values, solver_args, warm_start, on_failure, inaccurate, run)
        return sol, self._product(sol, derivative, product)

    def _runner(self, executor: Any, chunksize: int | None, solver_args: dict | None,
                inaccurate: str, derivative: tuple[str, tuple] | None
                ) -> tuple[ElementRunner | None, list]:
        """The forward pass's hook solving on ``executor`` (None: here) and the list that
        receives the derivative product and solve statistics computed with it."""
        product: list = []
        if executor is None:
            return None, product
        check_executor(executor)

        def run(call: SolveCall, theta: FloatArray, raw: FloatArray, warm: list,
                batch: int | None) -> list:
            results, joined, stats = distributed_solve(
                self, executor, chunksize, solver_args, inaccurate, derivative, call, theta,
                raw, warm, batch)
            product.append((joined, stats))
            return results

        return run, product

    @staticmethod
    def _product(sol: Solution, derivative: tuple[str, tuple], product: list) -> tuple:
        """The product computed on the workers (their statistics kept), else here."""
        if not product:
            kind, arrays = derivative
            return getattr(sol, kind)(*arrays)
        joined, stats = product[0]
        for k, st in enumerate(stats):
            if st is not None:
                sol.stats[k] = st
        return joined

    def derive(self, sol: Solution, kind: str, arrays: Sequence, executor: Any,
               chunksize: int | None) -> Any:
        """``sol.vjp``/``jvp``/``jacobian`` on ``executor`` (:func:`dpplayers._distributed.derive`)."""
        check_executor(executor)
        return distributed_derive(sol, kind, arrays, executor, chunksize)

    @functools.cached_property
    def shipped(self) -> ShippedProgram:
        """This program as it travels to workers: fingerprint and pickled state, built once."""
        return ShippedProgram.of(self)

    def __getstate__(self) -> dict:
        """Pickle/copy without what is built on first use (the cached properties): the
        copy rebuilds it, and its solver backend starts without workspaces."""
        return {k: v for k, v in self.__dict__.items() if k not in _CACHED_PROPERTIES}

    def data(self, theta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """θ̃ (p+1, B) → (P upper data, A data, b, c), each (rows, B); a map that does not
        depend on θ gives one column (shared by the batch), and no P gives (0, 1)."""
        return self._stacked_maps(theta)

    def data_linear(self, dtheta: FloatArray) -> tuple[FloatArray | None, FloatArray,
                                                       FloatArray, FloatArray]:
        """dθ (p, B) → d(P upper, A, b, c), each (rows, B); None for dP without a P."""
        dP, dA, db, dc = self._stacked_maps.linear(dtheta)
        return (dP if self.P is not None else None), dA, db, dc

    def element_data(self, data: tuple, k: int) -> tuple[sp.csc_matrix | None, sp.csc_matrix,
                                                         FloatArray, FloatArray]:
        """Element k's (P upper, A, b, c) as solver inputs, from :meth:`data`'s output."""
        P_data, A_data, b, c = data
        P = self.P.matrix(data_column(P_data, k)) if self.P is not None else None
        return P, self.A.matrix(data_column(A_data, k)), data_column(b, k), data_column(c, k)

    def element_matrices(self, data: tuple, k: int) -> tuple[sp.csc_matrix | None,
                                                             sp.csc_matrix]:
        """Element k's (P upper, A) alone (a solver that reuses its workspace skips them)."""
        P = self.P.matrix(data_column(data[0], k)) if self.P is not None else None
        return P, self.A.matrix(data_column(data[1], k))

    def data_transpose(self, gP: FloatArray | None, gA: FloatArray, gb: FloatArray,
                       gc: FloatArray) -> FloatArray:
        """Cotangents on the data (P upper, A, b, c), each (rows, B) → on θ (p, B)."""
        return self._stacked_maps.transpose((gP, gA, gb, gc))

    @functools.cached_property
    def _stacked_maps(self) -> StackedMaps:
        return StackedMaps.build((self.C_P, self.C_A, self.C_b, self.C_c))

    @functools.cached_property
    def parsed_calls(self) -> dict[tuple, SolveCall]:
        """The forward pass's parsed ``solver_args`` and policies, by their values
        (:func:`~._forward.parse_call`; not pickled, as every cached property)."""
        return {}

    @functools.cached_property
    def dual_cone(self) -> ProductCone:
        """K*, whose projection gives y = Π_K*(y − s) at a solution."""
        return ProductCone.from_dims(self.cones, dual=True)

    @functools.cached_property
    def data_patterns(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64],
                                     npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """(P rows, P cols, A rows, A cols) of the fixed patterns, in data order."""
        if self.P is None:
            return np.zeros(0, np.int32), np.zeros(0, np.int64), self.A.rows, self.A.cols
        return self.P.rows, self.P.cols, self.A.rows, self.A.cols

    @functools.cached_property
    def P_off_diagonal(self) -> npt.NDArray[np.intp]:
        """The entries of P's upper-triangle pattern off its diagonal."""
        P_rows, P_cols = self.data_patterns[:2]
        return np.flatnonzero(P_rows != P_cols)

    @functools.cached_property
    def auxiliaries(self) -> Auxiliaries:
        """The variables no requested output reads that may turn free at a solution (no
        entry in P), with their rows of A: Direct leaves such a one out of its LU where it
        meets only inactive rows (:func:`~._derivative.elimination.free_auxiliaries`)."""
        read = np.zeros(self.n, bool)
        columns = self.retrieval.matrix.indices
        read[columns[columns < self.n]] = True
        return Auxiliaries.of(self.A, self.P, ~read)

    @functools.cached_property
    def free_auxiliaries(self) -> FreeAuxiliaries | None:
        """The auxiliaries the batched derivative drops where an element leaves them free
        (:class:`~._derivative.inactive_rows.FreeAuxiliaries`), on its pattern (J̃'s where
        J has lifted blocks)."""
        pattern = self.kkt_pattern
        return FreeAuxiliaries.of(pattern.batch_lifted or pattern, self.auxiliaries)

    @functools.cached_property
    def kkt_pattern(self) -> KKTPattern:
        """The fixed sparsity of the derivative's J, built on first use."""
        P = self.P.matrix(np.zeros(self.P.indices.size)) if self.P is not None else None
        return kkt_pattern(P, self.A.matrix(np.zeros(self.A.indices.size)), self.dual_cone)

    def describe(self) -> str:
        """The canonical cone program: sizes, cones, nnz of each map, where parameters enter."""
        def enters(cmap: AffineMap | None) -> str:
            if cmap is None:
                return "(none)"
            names = cmap.entering(self.layout)
            return ", ".join(names) if names else "(constant)"

        lines = [
            (f"CompiledProblem: minimise ½xᵀPx + cᵀx s.t. Ax + s = b, s ∈ K   "
             f"[solver {self.solver}, derivative mode {self.mode}{', gp' if self.gp else ''}]"),
            (f"  variables n = {self.n}, constraint rows m = {self.m}, "
             f"parameters: {self.layout.size} entries in {len(self.layout.specs)} "
             f"({', '.join(f'{s.name}{list(s.shape)}' for s in self.layout.specs)})"),
            f"  cones K: {self.cones}",
            (f"  A: {self.A.shape[0]}×{self.A.shape[1]}, nnz {self.A.indices.size}; "
             f"map C_A nnz {self.C_A.nnz}; parameters in A: {enters(self.C_A)}"),
            f"  b: map C_b nnz {self.C_b.nnz}; parameters in b: {enters(self.C_b)}",
            f"  c: map C_c nnz {self.C_c.nnz}; parameters in c: {enters(self.C_c)}",
        ]
        if self.P is not None and self.C_P is not None:
            lines.append(
                f"  P (upper triangle): nnz {self.P.indices.size}; map C_P nnz {self.C_P.nnz}; "
                f"parameters in P: {enters(self.C_P)}"
            )
        else:
            lines.append("  P: none (linear objective)")
        lines.append(
            "  outputs: " + ", ".join(
                f"{o.name}{list(o.shape)}" for o in self.retrieval.outputs
            )
        )
        lines.append(f"  compiled in {self.compile_seconds:.3f} s")
        return "\n".join(lines)

    __str__ = describe


#: CompiledProblem's lazily built attributes, left out of its pickles and copies.
_CACHED_PROPERTIES = frozenset(name for name, attr in vars(CompiledProblem).items()
                               if isinstance(attr, functools.cached_property))


def compile(problem: cp.Problem, parameters: Sequence[cp.Parameter] | None = None,
            variables: Sequence[cp.Variable] | None = None, solver: str = "SCS",
            gp: bool = False, quad_obj: bool = True, mode: str = "direct",
            canon_backend: str | None = None,
            cache: bool | str | os.PathLike[str] = False) -> CompiledProblem:
    """Compile ``problem`` into a :class:`CompiledProblem`; done once, solved many times.

    Args:
        problem: a DPP problem (DGP with ``gp=True``).
        parameters: the problem's parameters, in the order values will be passed; all of
            them must be listed (default: ``problem.parameters()``).
        variables: what to return: variables of the problem and/or constraints' dual
            variables (``con.dual_variables[0]``); default: all variables.
        solver: "SCS" or "CLARABEL".
        gp: compile a log-log convex (DGP) problem in log space.
        quad_obj: keep a quadratic objective as P (default) or reformulate it with cones.
        mode: default derivative mode ("direct", "lsqr", "lsmr", "dense", or "embedding":
            the self-dual embedding's operator by LSQR, a slow reference).
        canon_backend: cvxpy's canonicalisation backend (default: cvxpy's choice).
        cache: keep the compiled program on disk and load it when the same problem (same
            structure and constants, any parameter values) is compiled again with the same
            request and options, in any process: ``True`` for ``$DPPLAYERS_CACHE`` or
            ``~/.cache/dpplayers``, or a directory. Entries from other versions or damaged
            ones are rebuilt (:mod:`dpplayers._cache`). Point it only at a trusted directory.

    Raises:
        DPPError: the problem is not DPP, or parameters/variables don't match it.
    """
    start = time.perf_counter()
    solver = solver.upper()
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    def build() -> CompiledProblem:
        canonical = canonicalize(problem, parameters, variables, gp, quad_obj, canon_backend)
        return CompiledProblem(
            problem=problem, **{f.name: getattr(canonical, f.name) for f in fields(canonical)},
            solver=solver, gp=gp, mode=mode, compile_seconds=time.perf_counter() - start,
            backend=make_solver(solver, canonical.cones, canonical.n),
        )

    if cache is False or cache is None:
        return build()
    options = {"solver": solver, "gp": gp, "quad_obj": quad_obj, "mode": mode,
               "canon_backend": canon_backend}
    try:
        key = fingerprint(problem, parameters, variables, options)
    except Uncacheable as why:
        prog = build()  # a request that does not match the problem raises here, unwarned
        warnings.warn(f"compile(cache=...): this problem cannot be cached ({why}); compiled "
                      "without the cache.", RuntimeWarning, stacklevel=2)
        return prog
    built: list[CompiledProblem] = []

    def state() -> dict:
        built.append(build())
        return {k: v for k, v in built[0].__getstate__().items() if k != "problem"}

    loaded, hit = cached(cache, key, state)
    if not hit:
        return built[0]
    # bound to this process's problem (its Parameter and Variable objects)
    return CompiledProblem(problem=problem, **loaded)
