"""Timing helpers shared by `sparseft bench` and benchmarks/: interleaved, best-of-N wall-clock.

    >>> t = best_times({"dense": lambda: F.linear(x, w), "sparse": lambda: layer(x)}, seconds=1.0)
    >>> t["dense"] / t["sparse"]        # speed-up

Candidates run in turn (A B A B ...) so a noisy neighbour slows all of them alike, and the minimum of
each is kept (the run least disturbed by other processes).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def _once(fn: Callable[[], object], reps: int, clock: Callable[[], float]) -> float:
    t0 = clock()
    for _ in range(reps):
        fn()
    return (clock() - t0) / reps


def best_times(
    fns: dict[str, Callable[[], object]], seconds: float = 1.0, rounds: int = 7, clock: str = "wall"
) -> dict[str, float]:
    """Best seconds per call of each function, measured in ``rounds`` interleaved rounds.

    ``clock="thread"`` counts the calling thread's CPU time only: on a machine shared with other jobs
    it leaves out the time the thread waits to be scheduled (valid for single-threaded runs only)."""
    tick = CLOCKS[clock]
    reps = {}
    for name, fn in fns.items():  # warm up and size each round to ~seconds / rounds / len(fns)
        fn()
        t = _once(fn, 1, time.perf_counter)
        reps[name] = max(1, int(seconds / rounds / len(fns) / max(t, 1e-7)))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], _once(fn, reps[name], tick))
    return best


def bandwidth_gbs(mbytes: int = 256) -> float:
    """Read bandwidth (GB/s) of summing a buffer far larger than the caches, with torch's threads."""
    a = torch.ones(mbytes * (1 << 20) // 4)
    t = best_times({"sum": a.sum}, seconds=1.0, rounds=5)["sum"]
    return a.numel() * 4 / t / 1e9
