"""A small LRU of solutions, for adapters whose derivative rule cannot carry state."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ._solution import Solution

FloatArray = npt.NDArray[np.float64]


class RecentSolutions:
    """A small LRU of solutions keyed by the parameter values and settings.

    Adapters whose derivative rule cannot carry the forward pass's ``Solution`` (JAX's
    callbacks are stateless) look it up here, so an eager ``jax.grad`` solves once and
    reuses the factorisation instead of solving again for the backward pass.
    """

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = maxsize
        self._entries: dict[bytes, Solution] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Pickle/copy as an empty cache (solutions are recomputed; a lock cannot pickle)."""
        return {"maxsize": self.maxsize}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["maxsize"])

    def solve(self, prog, values: Sequence[FloatArray], solver_args: dict,
              on_failure: str) -> Solution:
        digest = hashlib.blake2b(repr((sorted(solver_args.items()), on_failure)).encode())
        for v in values:
            arr = np.ascontiguousarray(v, dtype=np.float64)
            digest.update(repr(arr.shape).encode())
            digest.update(arr.tobytes())
        key = digest.digest()
        with self._lock:
            hit = self._entries.pop(key, None)
            if hit is not None:
                self._entries[key] = hit  # most recent last
                return hit
        sol = prog.solve(*values, solver_args=solver_args, on_failure=on_failure)
        with self._lock:
            self._entries[key] = sol
            while len(self._entries) > self.maxsize:
                self._entries.pop(next(iter(self._entries)))
        return sol
