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

#: Arrays smaller than this many doubles (glibc's initial mmap threshold, 128 KB) are
#: served from the heap without faults: they are allocated afresh.
SCRATCH_MIN = 1 << 14

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...]) -> FloatArray:
    """An uninitialised float64 array of ``shape``. Large ones are views of a buffer kept
    for ``name`` in this thread, valid only until the next call with the same name here:
    never return one to a caller outside the solve that asked for it."""
    size = math.prod(shape)
    if size < SCRATCH_MIN:
        return np.empty(shape)
    pool = _local.__dict__.setdefault("pool", {})
    buffer = pool.get(name)
    if buffer is None or buffer.size < size:
        buffer = pool[name] = np.empty(size)
    return buffer[:size].reshape(shape)
