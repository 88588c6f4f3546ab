"""Per-thread scratch arrays for the batched dense solve's largest temporaries.

glibc hands large freed blocks back to the OS on most calls, so a fresh array of a few MB
is mapped anew each time and every 4 KB page faults on first touch: about 1.6 µs per page
on this project's machines, 14 times the cost of writing a page already mapped. A
backward pass of lasso at batch 8 took 1,700 faults (6.7 ms against 3.7 ms without them).
Reusing one array per purpose and thread keeps its pages mapped; each holds the largest
size asked of it, which the batched solve's chunking bounds (a few MB).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...]) -> FloatArray:
    """An uninitialised float64 array of ``shape``: a view of a buffer kept for ``name`` in
    this thread, valid only until the next call with the same name here: never return one
    to a caller outside the solve that asked for it. Small arrays, which the heap serves
    without faults, were allocated afresh below 128 KB until measured (``routes.py``,
    backward, interleaved, 2026-12-07: every array here 0.94-1.07 of that on qp50, lasso,
    soc_proj, ncm, eq_lsq and psd_proj at batches 1-32, within noise)."""
    size = math.prod(shape)
    pool = _local.__dict__.setdefault("pool", {})
    buffer = pool.get(name)
    if buffer is None or buffer.size < size:
        buffer = pool[name] = np.empty(size)
    return buffer[:size].reshape(shape)
