"""Solving and differentiating a batch on an executor: chunks, one shipment of the program
per worker, fault handling (issue #20).

Any ``concurrent.futures.Executor`` will do — a ``ThreadPoolExecutor`` (in process: the
program is shared, never pickled), a ``ProcessPoolExecutor`` or any other (the program is
pickled) — and a ``dask.distributed.Client`` (or its ``get_executor()``).

* **Chunks.** The batch goes out in chunks of ``chunksize`` elements (default
  ceil(B / (4 · workers))), never one task per element.
* **The program travels once per worker.** It travels as a :class:`ShippedProgram`: its
  content fingerprint (SHA-256 of the payload) and a pickle of the program without its
  ``cp.Problem`` and without anything built on first use (workspaces, factorisations:
  ``CompiledProblem.__getstate__``). A worker unpickles it once and keeps it in
  :data:`PROGRAMS` by fingerprint. Dask: ``client.scatter(..., broadcast=True)``, once per
  client and program. Other pools: the payload rides with the first ``workers`` chunks of the
  first call; a worker without the program answers :data:`MISSING` for a chunk that came
  without it, and that chunk is sent again with it. Per chunk only θ (or the solution's
  canonical x, y, s and data), the settings and cotangents/tangents travel.
* **Derivatives** are computed on a worker from the chunk's own :class:`Solution` (its
  public ``vjp``/``jvp``/``jacobian``), so factorisations never travel: right after the
  solve (``solve_and_vjp``/``solve_and_jvp``), or later from (data, x, y, s) with one
  refactorisation and no re-solve.
* **Faults.** Workers solve under ``on_failure="nan"`` and stay quiet; the caller applies
  the policies over the whole batch (so errors name the user's batch index). Dask
  reschedules the chunks of a worker that died; a broken ``ProcessPoolExecutor``'s chunks
  are resubmitted on a fresh pool of the same size, up to :data:`MAX_POOL_RESTARTS` times
  (the fresh pool is shut down when the call returns; the caller's broken pool stays
  broken, as any broken pool does).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import os
import pickle
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import (
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._forward import SolveCall, finish, parse_call, solve_elements
from ._solution import Solution
from ._solve.backends import RawSolution
from .errors import DerivativeError, ParameterError

if TYPE_CHECKING:  # annotations only: _program imports this module
    from ._program import CompiledProblem

FloatArray = npt.NDArray[np.float64]

#: Worker side: the programs this process holds, by fingerprint.
PROGRAMS: dict[str, Any] = {}
#: Worker side: how many times each program was unpickled in this process (tests read it).
LOADS: collections.Counter[str] = collections.Counter()
#: Caller side: how many times each program's payload was sent (per scatter on Dask, per
#: chunk that carried it on other pools), for tests and for users who want to check.
SHIPMENTS: collections.Counter[str] = collections.Counter()
#: A worker's answer for a chunk whose program it does not hold (sent without it).
MISSING = "dpplayers: program missing"
#: Chunks per worker in the default chunk size (some slack for uneven elements).
CHUNKS_PER_WORKER = 4
#: How many fresh pools replace a broken ProcessPoolExecutor within one call.
MAX_POOL_RESTARTS = 3
#: Test hook: a worker whose environment names a file in this variable, and which removes
#: that file (one worker can), dies (``os._exit``) at the start of its chunk: a worker lost
#: mid-call, once per file created.
CRASH_ONCE_ENV = "DPPLAYERS_TEST_CRASH_ONCE"


@dataclass(frozen=True)
class ShippedProgram:
    """A compiled program as it travels: fingerprint and pickled state (no ``cp.Problem``).

    ``payload`` is None where the worker is expected to hold the program already."""

    key: str
    payload: bytes | None

    @classmethod
    def of(cls, prog: CompiledProblem) -> ShippedProgram:
        payload = pickle.dumps(dataclasses.replace(prog, problem=None),
                               protocol=pickle.HIGHEST_PROTOCOL)
        return cls(hashlib.sha256(payload).hexdigest(), payload)

    def without_payload(self) -> ShippedProgram:
        return ShippedProgram(self.key, None)

    def load(self) -> CompiledProblem | None:
        """The program, unpickled on this worker's first chunk only; None if absent."""
        prog = PROGRAMS.get(self.key)
        if prog is None and self.payload is not None:
            prog = PROGRAMS[self.key] = pickle.loads(self.payload)
            LOADS[self.key] += 1
        return prog


@dataclass(frozen=True)
class LocalProgram:
    """The program itself, for threads of this process (nothing is pickled)."""

    program: CompiledProblem

    def load(self) -> CompiledProblem:
        return self.program


ProgramRef = ShippedProgram | LocalProgram


# -- the worker side -----------------------------------------------------------------------


def _crash_once() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if marker:
        try:
            os.remove(marker)
        except FileNotFoundError:
            return
        os._exit(70)


def solve_chunk(ref: ProgramRef, solver_args: dict | None, inaccurate: str, theta: FloatArray,
                raw: FloatArray, warm: list[RawSolution | None],
                derivative: tuple[str, tuple] | None) -> Any:
    """Worker: solve a chunk of θ̃'s columns; with ``derivative = ("vjp", cotangents)`` or
    ``("jvp", tangents)`` (chunk-batched), differentiate it right away. Returns (answers,
    derivative product or None, per-element SolveStats) or :data:`MISSING`."""
    if isinstance(ref, ShippedProgram):  # a worker process (never the caller's own)
        _crash_once()
    prog = ref.load()
    if prog is None:
        return MISSING
    call = parse_call(prog, solver_args, "nan", inaccurate)
    data = prog.data(theta)
    results = solve_elements(prog, call, data, warm, n_jobs=1)
    if derivative is None:
        return results, None, None
    sol = finish(prog, call, results, raw, data, len(results), quiet=True)
    kind, arrays = derivative
    return results, getattr(sol, kind)(*arrays), sol.stats


def derive_chunk(ref: ProgramRef, state: dict[str, Any], kind: str, arrays: tuple) -> Any:
    """Worker: a chunk of a Solution rebuilt from (data, x, y, s, status), then its
    ``vjp``/``jvp`` (of ``arrays``) or ``jacobian``. Returns (product, SolveStats) or
    :data:`MISSING`."""
    if isinstance(ref, ShippedProgram):  # a worker process (never the caller's own)
        _crash_once()
    prog = ref.load()
    if prog is None:
        return MISSING
    sol = Solution(prog, **state)
    return getattr(sol, kind)(*arrays), sol.stats


# -- the caller's side ---------------------------------------------------------------------


class Runner:
    """Runs chunk tasks on one executor, shipping the program as the executor needs."""

    def __init__(self, executor: Any, prog: CompiledProblem) -> None:
        self.client = _dask_client(executor)
        self.executor = executor
        self.prog = prog

    @property
    def workers(self) -> int:
        """How many chunks can run at once."""
        if self.client is not None:
            return max(1, sum(self.client.nthreads().values()))
        return max(1, getattr(self.executor, "_max_workers", None) or os.cpu_count() or 1)

    def chunks(self, nb: int, chunksize: int | None) -> list[slice]:
        """The batch's elements in chunks (default ceil(B / (4·workers)))."""
        if chunksize is None:
            chunksize = math.ceil(nb / (CHUNKS_PER_WORKER * self.workers))
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive integer, got {chunksize!r}.")
        return [slice(i, min(i + chunksize, nb)) for i in range(0, nb, chunksize)]

    def map(self, fn: Callable[..., Any], tasks: list[tuple]) -> list[Any]:
        """fn(ref, *task) for each task, results in order."""
        if self.client is not None:
            return self._map_dask(fn, tasks)
        if isinstance(self.executor, ThreadPoolExecutor):
            ref = LocalProgram(self.prog)
            return [f.result() for f in [self.executor.submit(fn, ref, *t) for t in tasks]]
        return self._map_pool(fn, tasks)

    def _map_dask(self, fn: Callable[..., Any], tasks: list[tuple]) -> list[Any]:
        """The chunks on dask, the program scattered to every worker once per client. A
        worker that dies mid-call loses its tasks, which dask reruns elsewhere, but can
        also take the scattered program's key with it: dask then cancels the chunks that
        need it ("already forgotten"). Those are submitted again with the program
        scattered anew, up to MAX_POOL_RESTARTS times (the pool path's limit)."""
        client = self.client
        shipped = _shipped(self.prog)
        held = _SCATTERED.setdefault(client, {})
        results: dict[int, Any] = {}
        for attempt in range(MAX_POOL_RESTARTS + 1):
            scattered = held.get(shipped.key)
            if attempt or scattered is None or scattered.status != "finished":  # new, or lost
                held[shipped.key] = scattered = client.scatter(shipped, broadcast=True,
                                                               hash=False)
                SHIPMENTS[shipped.key] += 1
            futures = {i: client.submit(fn, scattered, *tasks[i], pure=False)
                       for i in range(len(tasks)) if i not in results}
            for i, future in futures.items():
                try:
                    results[i] = future.result()
                except CancelledError:  # its worker died with the program's key
                    continue
            if len(results) == len(tasks):
                return [results[i] for i in range(len(tasks))]
        raise RuntimeError(f"dask cancelled chunks of this call {MAX_POOL_RESTARTS + 1} times "
                           "(workers died with the scattered program); giving up.")

    def _map_pool(self, fn: Callable[..., Any], tasks: list[tuple]) -> list[Any]:
        shipped = _shipped(self.prog)
        bare = shipped.without_payload()
        executor, owned = self.executor, None
        results: dict[int, Any] = {}
        with_program: set[int] = set()
        fresh = shipped.key not in _PRIMED.get(executor, ())  # its workers lack the program
        restarts = 0
        try:
            while len(results) < len(tasks):
                todo = [i for i in range(len(tasks)) if i not in results]
                if fresh:  # the payload rides with one chunk per worker (a guess)
                    with_program.update(todo[: self.workers])
                    fresh = False
                SHIPMENTS[shipped.key] += len(with_program.intersection(todo))
                futures: dict[Future, int] = {
                    executor.submit(fn, shipped if i in with_program else bare, *tasks[i]): i
                    for i in todo}
                wait(futures)
                broken = False
                for future, i in futures.items():
                    try:
                        answer = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    if isinstance(answer, str) and answer == MISSING:
                        with_program.add(i)
                    else:
                        results[i] = answer
                if broken:
                    restarts += 1
                    if restarts > MAX_POOL_RESTARTS:
                        raise BrokenProcessPool(
                            f"the process pool broke {restarts} times in one call (a worker "
                            "died each time); giving up.")
                    if owned is not None:
                        owned.shutdown(wait=False, cancel_futures=True)
                    executor = owned = _fresh_pool(executor)
                    fresh = True
            if owned is None:
                _PRIMED.setdefault(executor, set()).add(shipped.key)
        finally:
            if owned is not None:
                owned.shutdown(wait=True)
        return [results[i] for i in range(len(tasks))]


#: Dask futures of each program scattered to each client's workers.
_SCATTERED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
#: The programs each pool's workers were sent once.
_PRIMED: weakref.WeakKeyDictionary[Executor, set[str]] = weakref.WeakKeyDictionary()


def _shipped(prog: CompiledProblem) -> ShippedProgram:
    return prog.shipped


def _fresh_pool(broken: Any) -> ProcessPoolExecutor:
    """A new pool like a broken one (same size and start method)."""
    return ProcessPoolExecutor(max_workers=getattr(broken, "_max_workers", None),
                               mp_context=getattr(broken, "_mp_context", None))


def _dask_client(executor: Any) -> Any:
    """The Dask client behind ``executor`` (a Client or its executor), else None."""
    module = type(executor).__module__
    if not module.startswith("distributed"):
        return None
    if hasattr(executor, "scatter") and hasattr(executor, "submit"):
        return executor
    client = getattr(executor, "_client", None)
    if client is None:
        raise TypeError(f"cannot find the Dask client behind {type(executor).__name__}.")
    return client


def check_executor(executor: Any) -> None:
    if _dask_client(executor) is None and not isinstance(executor, Executor):
        raise TypeError("executor must be a concurrent.futures.Executor or a "
                        f"dask.distributed.Client, got {type(executor).__name__}.")


def _columns(array: FloatArray, at: slice, nb: int) -> FloatArray:
    """A chunk's columns of a (rows, B) array; a shared single column stays whole."""
    return array[:, at] if array.shape[1] == nb and nb > 1 else array


def _batched(arrays: Sequence[npt.ArrayLike | None], shapes: Sequence[tuple[int, ...]],
             batch: int | None, what: str, names: Sequence[str]) -> list[FloatArray | None]:
    """Per-output cotangents or per-parameter tangents, checked here (before any chunk
    leaves) and given a leading batch axis where batched; an unbatched call's gain one
    (batch 1). A tangent may also come unbatched in a batched call: it broadcasts."""
    error = DerivativeError if what == "cotangent" else ParameterError
    if len(arrays) != len(shapes):
        raise error(f"expected {len(shapes)} {what}s ({', '.join(names)}), got {len(arrays)}.")
    out: list[FloatArray | None] = []
    for a, shape, name in zip(arrays, shapes, names):
        if a is None:
            out.append(None)
            continue
        arr = np.asarray(a)  # its dtype is checked where it is used, as in process
        want = shape if batch is None else (batch, *shape)
        if arr.shape != want and not (what == "tangent" and arr.shape == shape):
            raise error(f"{what} for '{name}' expects shape {want}, got {arr.shape}.")
        out.append(arr[None] if batch is None else arr)
    return out


def _slice(arrays: list[FloatArray | None], shapes: Sequence[tuple[int, ...]], at: slice,
           nb: int) -> tuple:
    return tuple(a[at] if a is not None and a.shape == (nb, *shape) else a
                 for a, shape in zip(arrays, shapes))


def _join(parts: list[tuple], batch: int | None) -> tuple:
    """Chunk products (tuples of batched arrays, maybe nested) → one, along the batch."""
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(_join([p[i] for p in parts], batch) for i in range(len(first)))
    joined = np.concatenate(parts, axis=0)
    return joined if batch is not None else joined[0]


def solve(prog: CompiledProblem, executor: Any, chunksize: int | None, solver_args: dict | None,
          inaccurate: str, derivative: tuple[str, Sequence] | None,
          call: SolveCall, theta: FloatArray, raw: FloatArray,
          warm: list[RawSolution | None], batch: int | None) -> tuple[list[RawSolution],
                                                                   tuple | None, list]:
    """Solve θ̃'s columns on ``executor`` (and differentiate them where asked): the answers
    in batch order, the joined derivative product and the per-element SolveStats."""
    runner = Runner(executor, prog)
    nb = theta.shape[1]
    chunks = runner.chunks(nb, chunksize)
    arrays, shapes = None, ()
    if derivative is not None:
        kind, given = derivative
        if kind == "vjp":
            outs = prog.retrieval.outputs
            shapes, names = [o.shape for o in outs], [o.name for o in outs]
            what = "cotangent"
        else:
            shapes = [s.shape for s in prog.layout.specs]
            names, what = [s.name for s in prog.layout.specs], "tangent"
        arrays = _batched(given, shapes, batch, what, names)
    tasks = [(solver_args, inaccurate, theta[:, at], raw[:, at], warm[at],
              None if derivative is None else (derivative[0], _slice(arrays, shapes, at, nb)))
             for at in chunks]
    answers = runner.map(solve_chunk, tasks)
    results = [r for a in answers for r in a[0]]
    if derivative is None:
        return results, None, [None] * nb
    stats = [s for a in answers for s in a[2]]
    return results, _join([a[1] for a in answers], batch), stats


def derive(sol: Solution, kind: str, arrays: Sequence, executor: Any,
           chunksize: int | None) -> Any:
    """``sol.vjp``/``jvp``/``jacobian`` computed chunk by chunk on ``executor``: each chunk's
    Solution is rebuilt on a worker from (data, x, y, s) — one refactorisation, no re-solve."""
    prog = sol.program
    runner = Runner(executor, prog)
    nb = sol.x.shape[1]
    batch = sol.batch
    chunks = runner.chunks(nb, chunksize)
    if kind == "vjp":
        outs = prog.retrieval.outputs
        shapes = [o.shape for o in outs]
        given = _batched(arrays, shapes, batch, "cotangent", [o.name for o in outs])
    elif kind == "jvp":
        shapes = [s.shape for s in prog.layout.specs]
        given = _batched(arrays, shapes, batch, "tangent", [s.name for s in prog.layout.specs])
    else:
        shapes, given = [], []
    values = [v if batch is not None else v[None] for v in sol.values]
    tasks = []
    for at in chunks:
        state = {"values": tuple(v[at] for v in values), "status": sol.status[at],
                 "info": sol.info[at], "x": sol.x[:, at], "y": sol.y[:, at], "s": sol.s[:, at],
                 "batch": at.stop - at.start, "mode": sol.mode,
                 "derivative_options": sol.derivative_options,
                 "_raw_theta": sol._raw_theta[:, at],
                 "_data": tuple(_columns(d, at, nb) for d in sol._data),
                 "accept_inaccurate": sol.accept_inaccurate}
        tasks.append((state, kind, _slice(given, shapes, at, nb)))
    answers = runner.map(derive_chunk, tasks)
    for at, (_, stats) in zip(chunks, answers):
        for k, st in zip(range(at.start, at.stop), stats):
            old = sol.stats[k]
            if st is not None and (old is None or st.residual >= old.residual):
                sol.stats[k] = st  # each element's worst solve, as in process
    return _join([a[0] for a in answers], batch)
