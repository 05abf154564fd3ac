"""Which code path the kernels run: ISA, AMX and thread count (process-wide settings).

    >>> best_isa()                       # what this CPU runs: 'avx512', 'avx2' or 'portable'
    'avx512'
    >>> with forced_isa("portable"):     # run the portable C path inside the block (tests)
    ...     y = sparse_matmul(x, cw)
    >>> set_num_threads(2)               # None: follow torch.get_num_threads()

The ISA is the best the CPU supports, or what ``set_isa`` / the env var ``SPARSEFT_ISA`` (``avx512``,
``avx2``, ``portable``; read once at import) forces. "avx512" needs AVX512F/BW/VL/DQ/VBMI/VBMI2/VNNI, "avx2"
AVX2/FMA/F16C (csrc/cpu.c). On CPUs with AMX (Sapphire Rapids and later), weights of a format with an
``amx_min_batch`` (bf16 from 4 rows of x, int8 from 3) run on the AMX kernels (csrc/kern_amx.c; same
accuracy as the AVX-512 kernels); ``set_amx`` / ``forced_amx`` / env ``SPARSEFT_AMX`` (``auto``, ``on``,
``off``) control it. fp32 / fp16 weights never run on AMX (bf16 tiles would round them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from sparseft.errors import ConfigError
from sparseft.runtime import _kernels
from sparseft.runtime.formats import format_names, get_format

ISAS = ("portable", "avx2", "avx512")
_forced: int | None = None
_threads: int | None = None


def best_isa() -> str:
    """The fastest code path this CPU runs: 'avx512', 'avx2' or 'portable'."""
    return ISAS[_kernels.best_isa()]


def _isa_code(name: str) -> int:
    if name not in ISAS:
        raise ConfigError(f"unknown ISA {name!r}; expected one of {', '.join(ISAS)}")
    code = ISAS.index(name)
    if code > _kernels.best_isa():
        raise ConfigError(f"this CPU cannot run the {name} path (best: {best_isa()})")
    return code


def set_isa(name: str | None) -> None:
    """Force a code path ('avx512', 'avx2', 'portable'), or None for the best available."""
    global _forced
    _forced = None if name is None else _isa_code(name)
    _sync_amx()


@contextlib.contextmanager
def forced_isa(name: str) -> Iterator[None]:
    """Context manager: run the kernels on ``name`` inside the block."""
    global _forced
    old = _forced
    set_isa(name)
    try:
        yield
    finally:
        _forced = old
        _sync_amx()


def isa_forced() -> bool:
    """True while ``set_isa`` / ``forced_isa`` forces a code path (tests of each path)."""
    return _forced is not None


def isa_code() -> int:
    """Code (index in ISAS) of the path the next call uses."""
    return _forced if _forced is not None else _default_code


def current_isa() -> str:
    """The code path the next call will use."""
    return ISAS[isa_code()]


def _default_isa_code() -> int:
    env = os.environ.get("SPARSEFT_ISA")
    return _isa_code(env) if env else _kernels.best_isa()


_default_code: int = _default_isa_code()  # once: the env var and CPU do not change while running


SPMV_ORDERS = ("sequential", "tiled")


def set_spmv_order(order: str) -> str:
    """How the batch-1 int8 kernels (weight-only and W8A8) walk a weight's rows: "sequential" (one row after
    another: one stream of values and mask words; the default on AMD CPUs, 12-19% faster per SmolLM2
    decode step on Zen 4) or "tiled" (4 rows side by side; the default elsewhere, measured on Intel).
    Same results either way (integer sums). Returns the previous order."""
    if order not in SPMV_ORDERS:
        raise ConfigError(f"unknown spmv order {order!r}; expected one of {', '.join(SPMV_ORDERS)}")
    return SPMV_ORDERS[0] if _kernels.set_spmv_sequential(order == "sequential") else SPMV_ORDERS[1]


@contextlib.contextmanager
def forced_spmv_order(order: str) -> Iterator[None]:
    """Context manager: the batch-1 int8 kernels walk rows in ``order`` inside the block (tests, benchmarks)."""
    old = set_spmv_order(order)
    try:
        yield
    finally:
        set_spmv_order(old)


def set_num_threads(n: int | None) -> None:
    """Threads for the kernels; None follows ``torch.get_num_threads()``."""
    global _threads
    _threads = n


def num_threads() -> int:
    """Threads the next kernel call uses."""
    return _threads or torch.get_num_threads()


# AMX: smallest batch (rows of x) run on the AMX kernels, per format; below, the AVX-512 kernels measured
# faster (benchmarks/bench_kernels.py --amx-crossover, BENCHMARKS.md). From each format's amx_min_batch.
AMX_MIN_BATCH = {n: get_format(n).amx_min_batch for n in format_names() if get_format(n).amx_min_batch}
AMX_MODES = ("auto", "on", "off")
_amx_mode = "auto"


def amx_available() -> bool:
    """True when the CPU has AMX-TILE/BF16/INT8 and AVX512-BF16 and the OS granted the tile state."""
    return bool(_kernels.amx_available())


def set_amx(mode: str | None) -> None:
    """AMX kernels for bf16 / int8 weights (bitmask index): "auto" (or None, the default) from
    ``AMX_MIN_BATCH`` rows of x on, when AMX is available and no ISA is forced with ``set_isa``; "on": every
    bf16 / int8 call on the AVX-512 path, any batch; "off": never.

    >>> with forced_amx("off"):          # the AVX-512 kernels only
    ...     y = sparse_matmul(x, cw)
    """
    global _amx_mode
    mode = mode or "auto"
    if mode not in AMX_MODES:
        raise ConfigError(f"unknown AMX mode {mode!r}; expected one of {', '.join(AMX_MODES)}")
    if mode == "on" and not amx_available():
        raise ConfigError(
            "this CPU / OS cannot run the AMX kernels (they need AMX-TILE/BF16/INT8, AVX512-BF16 and Linux "
            ">= 5.16); use 'auto' or 'off'"
        )
    _amx_mode = mode
    _sync_amx()


@contextlib.contextmanager
def forced_amx(mode: str) -> Iterator[None]:
    """Context manager: ``set_amx(mode)`` inside the block."""
    old = _amx_mode
    set_amx(mode)
    try:
        yield
    finally:
        set_amx(old)


def _amx_threshold(fmt: str) -> int:
    """Smallest batch of ``fmt`` weights on AMX now; 0 = never."""
    auto = AMX_MIN_BATCH.get(fmt, 0)
    if not auto or _amx_mode == "off" or isa_code() != ISAS.index("avx512") or not amx_available():
        return 0
    if _amx_mode == "on":
        return 1
    return 0 if _forced is not None else auto  # a forced ISA runs its own kernels (tests of each path)


def amx_used(fmt: str, batch: int, in_features: int, index: str = "bitmask") -> bool:
    """Whether a call with these weights and ``batch`` rows of x runs on the AMX kernels now."""
    t, max_k = _amx_threshold(fmt), get_format(fmt).int_sum_max_k
    return index == "bitmask" and t > 0 and batch >= t and (max_k is None or in_features <= max_k)


def _sync_amx() -> None:
    for name in format_names():
        _kernels.set_amx(get_format(name).kernel_id, _amx_threshold(name))


set_amx(os.environ.get("SPARSEFT_AMX", "auto"))
