"""The thread pool that runs a batch's elements side by side: the forward's solves (SCS and
Clarabel release the GIL) and, where BLAS is single-threaded, the derivative's chunks.

BLAS's own threads compete with ours for the cores: on this project's 2-core machines, a
batch of 32 spectraplex projections (PSD 20) took 346 ms backward with numpy's OpenBLAS
at its default two threads against 118 ms with one, and spreading the derivative's chunks
over two threads as well made it 570-730 ms. Limiting BLAS for the duration of a call
(threadpoolctl) was tried and left: switching OpenBLAS's thread count back and forth made
the calls after it erratic (an MPC's backward at batch 8: 44-74 ms against 14-25 ms). So
the derivative's chunks go to the pool only where BLAS already runs on one thread (the
user's ``OMP_NUM_THREADS=1`` or ``threadpoolctl.threadpool_limits(1)``, which README
recommends on small machines), and dpplayers never changes the setting itself.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import ThreadpoolController

T = TypeVar("T")
R = TypeVar("R")

#: Default pool size: the machine's cores.
CPU_COUNT = os.cpu_count() or 1


@functools.cache
def _executor(workers: int) -> ThreadPoolExecutor:
    """A shared pool per worker count."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dpplayers")


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]``, on up to ``workers`` threads of the shared pool (in the
    caller's thread where that is one)."""
    items = list(items)
    workers = min(workers, len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    return list(_executor(workers).map(fn, items))


@functools.cache
def _blas() -> tuple:
    """threadpoolctl's controllers of the loaded BLAS libraries (2.7 ms to find: once)."""
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def blas_single_threaded() -> bool:
    """Whether every loaded BLAS runs on one thread (a few µs: each library is asked)."""
    return all(lib.num_threads == 1 for lib in _blas())
