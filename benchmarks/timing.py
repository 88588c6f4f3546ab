"""Wall-clock timing: medians over interleaved repeats.

The machine may be shared with other jobs, so the libraries of one (workload, batch) case
are timed round-robin: each round runs every library once (in a rotated order), and load
that comes and goes hits all of them alike. A library's round is a short training loop
(:class:`TrainingLoop`): a few consecutive steps, each a fresh forward pass (timed) and then
the backward pass on that forward's result (timed), so a backward never reuses a
factorisation cached by an earlier step; the round records each metric's median step, and
fwd+bwd is the per-step sum, the cost of one training step. One untimed warm-up round comes
first (imports, JIT, allocator, solver workspaces a layer keeps across calls). At least
``MIN_REPEATS`` rounds are timed, more for fast cases (up to ``MAX_REPEATS``, about
``BUDGET_S`` seconds in all); medians over rounds are reported with the min and max beside
them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MIN_REPEATS, MAX_REPEATS, BUDGET_S = 5, 31, 2.0

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


#: Above this growth of the resident set (bytes), freed heap is handed back to the OS.
RSS_SLACK = 1 << 30


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_BASELINE = [0]  # resident bytes when first asked (raised after each trim)


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (untimed, before a library's
    round) — only once the process has grown by more than RSS_SLACK.

    diffcp's worker threads fragment glibc's arenas: at qp200, batch 128, cvxpylayers' ~5 GB
    per call otherwise stays resident and grows by ~2 GB a round until the OOM killer ends
    the run; ``malloc_trim`` returns it. Doing it before every round instead (as this
    benchmark first did) makes every timed call start on a cold cache and fault its pages
    back in: small calls then measured 1.5–3.5× slower than back-to-back calls, as in a
    training loop (bare SCS on the SOC projection: 0.99 against 0.28 ms).
    """
    rss = _resident_bytes()
    if not _BASELINE[0]:
        _BASELINE[0] = rss
    if rss - _BASELINE[0] <= RSS_SLACK:
        return
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    _BASELINE[0] = max(_BASELINE[0], _resident_bytes())


#: One round of one library: runs its passes once, returns seconds per metric.
Round = Callable[[], dict[str, float]]


@dataclass(frozen=True)
class Timing:
    """Seconds per repeat for one measured quantity."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        s = sorted(self.samples)
        k = len(s) // 2
        return s[k] if len(s) % 2 else 0.5 * (s[k - 1] + s[k])

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": min(self.samples), "max": max(self.samples),
                "repeats": len(self.samples)}


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


#: A training loop runs about this many seconds per round, in at most MAX_STEPS steps.
LOOP_SECONDS, MAX_STEPS = 0.01, 8


@dataclass
class TrainingLoop:
    """One library's round: ``steps`` consecutive training steps, forward (timed) then
    backward on its result (timed); returns each metric's median step.

    A single call per round runs right after the other libraries' calls, on caches they
    have just flushed, which costs Python-heavy code far more than a solver's C (dpplayers'
    forward on the SOC projection: 0.70 ms against 0.38 ms back to back, while bare SCS went
    0.48 → 0.29). A training loop calls the same layer step after step, so fast cases (a
    step under LOOP_SECONDS) run several steps per round, as :meth:`calibrate` decides from
    untimed warm-up steps; slow cases, where caches do not matter, keep one."""

    forward: Callable[[], Any]
    backward: Callable[[Any], Any] | None
    steps: int = 1

    def calibrate(self) -> None:
        """Untimed warm-up steps (the first pays one-off costs: caches, lazy set-up), then
        as many steps per round as fit in LOOP_SECONDS at the fastest warm-up step's pace."""
        step = float("inf")
        for k in range(3):
            times = self._step()
            step = min(step, times.get("fwd+bwd", times["forward"]))
            if k and step > LOOP_SECONDS:  # a slow case: one step per round, no more warm-up
                break
        self.steps = max(1, min(MAX_STEPS, int(LOOP_SECONDS / max(step, 1e-9))))

    def _step(self) -> dict[str, float]:
        t_f, state = clock(self.forward)
        if self.backward is None:
            return {"forward": t_f}
        t_b = clock(lambda: self.backward(state))[0]
        return {"forward": t_f, "backward": t_b, "fwd+bwd": t_f + t_b}

    def __call__(self) -> dict[str, float]:
        steps = [self._step() for _ in range(self.steps)]
        return {metric: Timing(tuple(s[metric] for s in steps)).median for metric in steps[0]}


def after_round(metric: str, setup: Callable[[], Any], then: Callable[[Any], Any]) -> Round:
    """``then(setup())`` timed without ``setup`` (e.g. a Jacobian after a fresh forward)."""
    def run() -> dict[str, float]:
        state = setup()
        return {metric: clock(lambda: then(state))[0]}
    return run


def interleave(rounds: dict[str, list[Round]], repeats: int = MIN_REPEATS,
               warmup: int = 1) -> dict[str, dict[str, Timing]]:
    """Time every library's rounds round-robin; returns {library: {metric: Timing}}."""
    names = list(rounds)
    samples: dict[str, dict[str, list[float]]] = {n: {} for n in names}

    def one_round(k: int, record: bool) -> None:
        for name in names[k % len(names):] + names[: k % len(names)]:
            for r in rounds[name]:
                release_memory()
                for metric, t in r().items():
                    if record:
                        samples[name].setdefault(metric, []).append(t)

    for k in range(warmup):
        one_round(k, record=False)
    start = time.perf_counter()
    one_round(0, record=True)
    per_round = time.perf_counter() - start
    total = min(MAX_REPEATS, max(repeats, MIN_REPEATS, math.ceil(BUDGET_S / max(per_round, 1e-9))))
    for k in range(1, total):
        one_round(k, record=True)
    return {n: {m: Timing(tuple(v)) for m, v in s.items()} for n, s in samples.items()}
