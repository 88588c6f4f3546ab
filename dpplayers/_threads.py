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
#: A batch goes to the pool in chunks of about this many bytes of the dense arrays each
#: element's work streams (the dense QP route's P, A, P⁻¹Aᵀ, A P⁻¹Aᵀ; the batched
#: derivative's blocks, in per-thread scratch arrays): larger chunks pay fewer numpy calls
#: per element, smaller ones stay in cache. Measured, medians on a loaded machine: the QP
#: route's forward on qp200 at batch 128 (1 MB per element) 876 ms in chunks of 8 MB
#: against 1,495 ms in two halves and 1,102 ms in chunks of 2 MB; the batched derivative's
#: backward against chunks of 1 MB (``routes.compare``, 15 rounds interleaved): qp50 0.90
#: at batch 32 and 0.84 at 128, lasso 0.91 at 8 and 0.99–1.01 at 32–128, soc_proj 0.95,
#: ncm 0.71 and eq_lsq 0.71 at 128, lp_inactive 0.92 at 32.
CHUNK_BYTES = 8 << 20


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
