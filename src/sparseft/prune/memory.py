"""Process memory: keep glibc from hoarding freed block-sized buffers, and read the peak RSS.

PyTorch on CPU allocates its large tensors with malloc. After a large mmapped chunk is freed, glibc
raises its mmap threshold to that size (up to 32 MiB) and serves later chunks from the heap, where
the driver's per-batch temporaries (10-25 MB each for SmolLM2) fragment it and are not given back.
Measured on SmolLM2-135M in memory (capture + 4 blocks, 128 x 512 tokens): peak RSS 1.32 GB and
growing ~25 MB per block with glibc's defaults; 1.24 GB once the driver stopped reallocating the
activations; 1.13 GB and flat with fixed thresholds. The price: each large temporary is page-faulted
afresh, ~3 s of system CPU time per SmolLM2 block (~15% of the one-shot's CPU time).

    >>> pin_malloc_thresholds()        # once, before the big allocations; a no-op without glibc
    True
    >>> peak_rss_mib()                 # ru_maxrss: what /usr/bin/time -v reports as the maximum RSS
    812.4
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_pinned = False


def pin_malloc_thresholds(mmap_threshold: int = 1 << 20, trim_threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap and trim thresholds (setting them turns off the adaptive growth); True if done.

    Allocations of `mmap_threshold` bytes or more then always get their own mapping, returned to the
    system when freed. Process-wide and idempotent; returns False where libc has no `mallopt` (musl, macOS).
    """
    global _pinned
    if _pinned:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _pinned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _pinned


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
