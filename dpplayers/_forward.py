"""The forward pass: values → θ̃ → data C θ̃ → one solve per batch element → a Solution.

Elements run on a thread pool for batches of MIN_PARALLEL_BATCH or more (SCS and Clarabel
release the GIL); a failed element raises or, with ``on_failure="nan"``, comes back NaN
with its status. An element that stopped short of its tolerances (iteration or time limit,
reduced accuracy) keeps its point and warns, as CVXPY and cvxpylayers do; with
``inaccurate="fail"`` it counts as failed.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from ._derivative.batch import make_strategy
from ._derivative.refine import newton_refine
from ._solution import DERIVATIVE_OPTIONS, Solution
from ._solve import qp_route
from ._solve.backends import AbstractConeSolver, ConeData, RawSolution, Status
from ._solve.solver_args import translate
from ._sparse import data_column
from ._threads import CPU_COUNT, parallel_map
from .errors import InaccurateSolutionWarning, SolverError

FloatArray = npt.NDArray[np.float64]
FAILURE_POLICIES = ("raise", "nan")
#: Solves a call's elements elsewhere: (call, θ̃ (q+1, B), raw values (p, B), warm starts,
#: batch size or None) ↦ one answer per element.
ElementRunner: TypeAlias = Callable[["SolveCall", FloatArray, FloatArray, list, "int | None"],
                                    list[RawSolution]]
#: What an inaccurate element (Status.INACCURATE, ITERATION_LIMIT) does: return its point
#: with an InaccurateSolutionWarning, or count as a failure (then ``on_failure`` decides).
INACCURATE_POLICIES = ("warn", "fail")
#: Batches at least this large are solved on a thread pool (``solver_args={"n_jobs": k}``).
MIN_PARALLEL_BATCH = 4


@dataclass(frozen=True)
class SolveCall:
    """One call's settings, parsed once from ``solver_args`` and the policies."""

    backend: AbstractConeSolver
    settings: Any
    derivative_options: dict[str, Any]
    mode: str
    on_failure: str
    accept: bool  # inaccurate="warn": an inaccurate element's point is usable
    n_jobs: int | None
    reuse: bool  # A and P do not depend on θ: a solver workspace may be kept
    dense_qp: bool = False  # the settings leave the dense QP route free (qp_route.honours)

    @property
    def refine(self) -> int:
        """Newton steps after the solver (``solver_args={"refine": k}``)."""
        return int(self.derivative_options.get("refine", 0))


def parse_call(prog, solver_args: dict | None, on_failure: str,
               inaccurate: str = "warn") -> SolveCall:
    """Check and split ``solver_args`` and the policies (raises ValueError on bad ones).

    A training loop passes the same arguments on every call, so each program remembers
    the calls it parsed (up to CALL_CACHE_SIZE), keyed by the arguments with their types
    (``True`` is not ``1`` to a solver); unhashable arguments are parsed every time."""
    try:
        key = (on_failure, inaccurate, *[(k, type(v), v) for k, v in solver_args.items()]
               ) if solver_args else (on_failure, inaccurate)
        cache = prog.parsed_calls
        call = cache.get(key)
    except (TypeError, AttributeError):  # unhashable; or a program without the cache
        return _parse_call(prog, solver_args, on_failure, inaccurate)
    if call is None:
        call = _parse_call(prog, solver_args, on_failure, inaccurate)
        if len(cache) >= CALL_CACHE_SIZE:
            cache.clear()
        cache[key] = call
    return call


#: How many parsed argument sets a program remembers (see parse_call).
CALL_CACHE_SIZE = 16


def _parse_call(prog, solver_args: dict | None, on_failure: str, inaccurate: str) -> SolveCall:
    """:func:`parse_call` without the cache."""
    args = dict(solver_args or {})
    on_failure = args.pop("on_failure", on_failure)  # a layer's defaults ride in solver_args
    inaccurate = args.pop("inaccurate", inaccurate)
    if on_failure not in FAILURE_POLICIES:
        raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}, got {on_failure!r}.")
    if inaccurate not in INACCURATE_POLICIES:
        raise ValueError(f"inaccurate must be one of {INACCURATE_POLICIES}, got {inaccurate!r}.")
    args = translate(args, prog.mode, prog.backend)  # cvxpylayers' keys
    backend = prog.backend.for_method(args.pop("solve_method", None))
    derivative_options = {k: args.pop(k) for k in DERIVATIVE_OPTIONS if k in args}
    n_jobs = args.pop("n_jobs", None)
    if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs < 1):
        raise ValueError(f"n_jobs must be a positive integer, got {n_jobs!r}.")
    mode = derivative_options.get("mode", prog.mode)
    if derivative_options:  # validate now, not at backward time (prog.mode already was)
        make_strategy(mode, derivative_options)
    reuse = prog.C_A.is_constant and (prog.C_P is None or prog.C_P.is_constant)
    return SolveCall(backend, backend.settings_for(args), derivative_options, mode, on_failure,
                     inaccurate == "warn", n_jobs, reuse, qp_route.honours(args))


def solve_compiled(prog, values: Sequence[npt.ArrayLike], solver_args: dict | None,
                   warm_start: Solution | None, on_failure: str,
                   inaccurate: str = "warn", run: ElementRunner | None = None) -> Solution:
    """Forward pass for :meth:`CompiledProblem.solve`.

    ``run(call, θ̃, raw, warm, batch)`` solves the elements elsewhere (:mod:`dpplayers._distributed`);
    by default they are solved here by :func:`solve_elements`."""
    call = parse_call(prog, solver_args, on_failure, inaccurate)
    theta, raw, batch = prog.layout.stack(values)
    nb = theta.shape[1]
    data = prog.data(theta)
    warm = _warm_starts(warm_start, nb, prog) if warm_start is not None else [None] * nb
    if run is None:
        results = solve_elements(prog, call, data, warm)
    else:
        results = run(call, theta, raw, warm, batch)
    return finish(prog, call, results, raw, data, batch)


def solve_elements(prog, call: SolveCall, data: tuple, warm: Sequence[RawSolution | None],
                   n_jobs: int | None = None) -> list[RawSolution]:
    """Solve (and with ``refine``, polish) each element of the data (P, A, b, c): a batch
    the dense QP route accepts (:mod:`._solve.qp_route`) in batched interior-point runs,
    any element it leaves and every other batch by the conic solver, on the thread pool
    for batches of MIN_PARALLEL_BATCH or more."""
    nb = len(warm)
    n_jobs = n_jobs or call.n_jobs or CPU_COUNT
    routed = _dense_route(prog, call, data, warm, n_jobs)
    if nb == 1:  # one element: no list to fill (the batch-1 call of a training loop)
        results = routed if routed[0] is not None else [
            _solve_element(prog, call, data, 0, warm[0])]
    else:
        todo = [k for k in range(nb) if routed[k] is None]
        solved = parallel_map(lambda k: _solve_element(prog, call, data, k, warm[k]), todo,
                              n_jobs if len(todo) >= MIN_PARALLEL_BATCH else 1)
        results = list(routed)
        for k, raw in zip(todo, solved):
            results[k] = raw
    steps = call.refine
    if steps:
        results = [_refined(prog, data, k, r, steps) for k, r in enumerate(results)]
    return results


def _solve_element(prog, call: SolveCall, data: tuple, k: int,
                   warm: RawSolution | None) -> RawSolution:
    """Element k by the call's conic solver (P and A built only where it needs them)."""
    matrices = functools.partial(prog.element_matrices, data, k)
    return call.backend.solve(ConeData(matrices, data_column(data[2], k), data_column(data[3], k)),
                              call.settings, call.reuse, warm)


def _dense_route(prog, call: SolveCall, data: tuple, warm: Sequence[RawSolution | None],
                 n_jobs: int) -> list[RawSolution | None]:
    """The batch's elements solved by the dense QP route where it accepts the call (None
    for each element it leaves to the conic solver), in chunks (qp_route.chunks) on up to
    ``n_jobs`` threads of the pool (numpy's LAPACK and matmul loops release the GIL)."""
    nb = len(warm)
    nnz_P = prog.P.indices.size if prog.P is not None else None
    if not (call.dense_qp and qp_route.accepts(prog.cones, prog.n, prog.m, prog.A.indices.size,
                                               nnz_P, nb)
            and all(w is None for w in warm)):
        return [None] * nb

    def solve(elements: slice) -> list[RawSolution | None]:
        return qp_route.solve(qp_route.assemble(prog.data_patterns, data, prog.n, prog.cones,
                                                elements))
    chunks = qp_route.chunks(prog.n, prog.m, nb)
    parts = [solve(chunks[0])] if len(chunks) == 1 else parallel_map(solve, chunks, n_jobs)
    return [raw for part in parts for raw in part]


def finish(prog, call: SolveCall, results: list[RawSolution], raw: FloatArray, data: tuple,
           batch: int | None, quiet: bool = False) -> Solution:
    """The elements' answers → a :class:`Solution`, applying the failure and inaccuracy
    policies (raise or NaN, warn) with elements named by their place in the batch;
    ``quiet``: NaN-fill failures silently (a chunk solved on a worker: its caller decides)."""
    accept, nb = call.accept, len(results)
    if (results[0].status is Status.OPTIMAL if nb == 1  # the usual case: nothing to report
            else all(r.status is Status.OPTIMAL for r in results)):
        failed, inexact = [], []
    else:
        failed, inexact = _failed_and_inexact(results, accept)
    if failed and call.on_failure == "raise" and not quiet:
        raise SolverError(_failure_message(call.backend.name, results, failed, batch))
    if failed and not quiet:
        warnings.warn(f"{len(failed)} of {nb} batch elements failed ({failed[:10]}); their "
                      "values are NaN and their status says why.", RuntimeWarning, stacklevel=4)
    if inexact and not quiet:
        warnings.warn(_inaccurate_message(call.backend.name, results, inexact, batch),
                      InaccurateSolutionWarning, stacklevel=4)
    if nb == 1 and not failed:  # one element: its vectors as columns (views, no copies)
        r = results[0]
        x, y, s = r.x[:, None], r.y[:, None], r.s[:, None]
    else:
        x, y, s = (_stack_columns([getattr(r, name) if r.status.usable(accept)
                                   else np.full(size, np.nan) for r in results])
                   for name, size in (("x", prog.n), ("y", prog.m), ("s", prog.m)))
    outputs = prog.retrieval.apply(x, y, batched=batch is not None)
    info = tuple([{"status": r.solver_status, "iterations": r.iterations, "seconds": r.seconds,
                   "setup_seconds": r.setup_seconds} for r in results])
    options = call.derivative_options  # the call is shared (parse_call): the Solution's own
    kept = [r.kept for r in results]  # the dense QP route's factors, for its backward
    return Solution(prog, outputs, tuple([r.status for r in results]), info, x, y, s, batch,
                    call.mode, dict(options) if options else {}, raw, data, accept,
                    route_factors=tuple(kept) if any(h is not None for h in kept) else None)


def _failed_and_inexact(results: list[RawSolution], accept: bool) -> tuple[list[int],
                                                                            list[int]]:
    """The elements whose point is not returned, and those returned though inaccurate."""
    failed = [k for k, r in enumerate(results) if not r.status.usable(accept)]
    inexact = [k for k, r in enumerate(results) if r.status.ok and not r.status.accurate
               and k not in failed]
    return failed, inexact


def _where(k: int, batch: int | None) -> str:
    return f"batch element {k}" if batch is not None else "the problem"


def _failure_message(solver: str, results: list[RawSolution], failed: list[int],
                     batch: int | None) -> str:
    """The SolverError text: the first failed element, its solver status and why."""
    k = failed[0]
    r = results[k]
    detail = f" ({r.detail})" if r.detail else ""
    policy = (" It stopped short of its tolerances and inaccurate='fail' was passed."
              if r.status.ok else "")
    return (f"{solver} failed on {_where(k, batch)} (of {len(failed)} failed): solver "
            f"status '{r.solver_status}' — {r.status.value}{detail}.{policy} Pass "
            "on_failure='nan' to get NaN for failed elements instead.")


def _inaccurate_message(solver: str, results: list[RawSolution], inexact: list[int],
                        batch: int | None) -> str:
    """The InaccurateSolutionWarning text: which elements, their status, where the solver
    stopped, and what helps (more iterations help only while the residuals still fall)."""
    k = inexact[0]
    r = results[k]
    which = (f"batch elements {inexact[:10]}{' ...' if len(inexact) > 10 else ''} (of "
             f"{len(results)})" if batch is not None else "the problem")
    detail = f"; {_where(k, batch)} {r.detail}" if r.detail else ""
    return (f"{solver} returned inaccurate solutions for {which}: solver status "
            f"'{r.solver_status}' — {r.status.value}{detail}. Values and derivatives are "
            "given at that point. More iterations help only while the residuals still fall; "
            "where they stall, loosen eps, add solver_args={'refine': 2}"
            f"{_STALL_ADVICE.get(solver, '')} or use the other solver. Pass "
            "inaccurate='fail' to treat this as a failure.")


#: Solver-specific advice for a stalled solve.
_STALL_ADVICE = {"SCS": ", pick a linear_solver that refines its solves ('mkl', 'cpu_dense')"}


def _refined(prog, data: tuple, k: int, raw: RawSolution, steps: int) -> RawSolution:
    """``solver_args={"refine": steps}``: Newton-polish element k (see newton_refine)."""
    if not raw.status.ok:
        return raw
    P, A, b, c = prog.element_data(data, k)
    x, y, s, _ = newton_refine(P, A, b, c, raw.x, raw.y, raw.s, prog.cones, steps,
                               prog.kkt_pattern, prog.dual_cone)
    return RawSolution(x, y, s, raw.status, raw.solver_status, raw.iterations, raw.seconds,
                       raw.setup_seconds, kept=raw.kept)  # factors of the data: still valid


def _warm_starts(previous: Solution, nb: int, prog) -> list[RawSolution | None]:
    if not isinstance(previous, Solution) or previous.program is not prog:
        raise ValueError("warm_start must be a Solution returned by this CompiledProblem's solve.")
    pb = previous.x.shape[1]
    if pb not in (1, nb):
        raise ValueError(f"warm_start has batch size {pb}; this call has {nb} (or pass batch 1).")
    out = []
    for k in range(nb):
        j = k if pb == nb else 0
        if not previous.ok[j]:  # a NaN-filled failure seeds nothing
            out.append(None)
            continue
        out.append(RawSolution(previous.x[:, j], previous.y[:, j], previous.s[:, j],
                               previous.status[j], "", 0, 0.0))
    return out


def _stack_columns(columns: list[FloatArray]) -> FloatArray:
    """Vectors → the columns of one (size, B) array (a view for a single vector)."""
    return columns[0][:, None] if len(columns) == 1 else np.stack(columns, axis=1)
