"""Python wrappers of the C kernels (``sparseft.runtime._kernels``).

    >>> from sparseft.runtime.format import compress
    >>> cw = compress(torch.randn(64, 96) * (torch.rand(64, 96) > 0.7), "bf16")
    >>> y = sparse_matmul(torch.randn(3, 96), cw)          # (3, 64) = x @ W^T
    >>> with forced_isa("portable"):                        # run the portable C path (tests)
    ...     y2 = sparse_matmul(torch.randn(3, 96), cw)

The ISA is the best the CPU supports, or what ``set_isa`` / the env var ``SPARSEFT_ISA``
(``avx512``, ``avx2``, ``portable``; read once at import) forces. "avx512" needs AVX512F/BW/VL/VBMI2/VNNI.
Kernels by batch size on AVX-512: 1 -> SpMV with expand loads; 2-12 -> each decoded word reused for up
to 16 rows of x; more -> per-row nonzero lists against x transposed in tiles of 32 (zeros cost nothing).
On CPUs with AMX (Sapphire Rapids and later), bf16 / int8 weights from ``AMX_MIN_BATCH`` rows of x on run
on the AMX kernels instead (csrc/kern_amx.c: tiles decoded to dense bf16 / int8, multiplied with
TDPBF16PS / TDPBSSD; same accuracy as the AVX-512 kernels); ``set_amx`` / ``forced_amx`` / env
``SPARSEFT_AMX`` (``auto``, ``on``, ``off``) control it. fp32 weights never run on AMX (bf16 tiles would
round them).
The thread count defaults to ``torch.get_num_threads()`` (``set_num_threads`` overrides it).

W8A8 (int8 weights x int8 activations, VNNI integer dot products; see csrc/w8a8_common.h):

    >>> cw = compress(torch.randn(64, 96) * (torch.rand(64, 96) > 0.7), "int8")
    >>> y = sparse_matmul_w8a8(torch.randn(3, 96), cw)                  # x quantized per token
    >>> y = sparse_matmul_w8a8(torch.randn(3, 96), cw, input_scale=0.02)  # static per-tensor scale
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from sparseft.errors import ConfigError
from sparseft.runtime import _kernels
from sparseft.runtime.format import FORMATS, CompressedWeight

ISAS = ("portable", "avx2", "avx512")
# Activation modes of SparseLinear: fp32 activations, or int8 ones quantized per token / with a fixed scale.
ACT_MODES = ("none", "dynamic-int8", "static-int8")
W8A8_MAX_K = 65536  # the kernels' int32 accumulators are exact up to this many columns
_FMT_CODE = {name: i for i, name in enumerate(FORMATS)}
_forced: int | None = None
_default_code: int = 0  # set below, once: the env var and CPU do not change while running
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


def current_isa() -> str:
    """The code path the next call will use."""
    return ISAS[_current_code()]


def isa_code() -> int:
    """Code (index in ISAS) of the path the next call uses."""
    return _forced if _forced is not None else _default_code


def weight_args(cw: CompressedWeight, rowsum: torch.Tensor, bias: torch.Tensor | None) -> tuple:
    """(fmt code, M, K, KW, mask, values, rowptr, scales, rowsum, bias addresses, delta flag) for
    ``_kernels.matmul``; valid while the tensors live and are not resized."""
    m, k = cw.shape
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        raise ConfigError("bias must be a contiguous float32 tensor")
    return (
        _FMT_CODE[cw.fmt], m, k, (k + 63) // 64,
        cw.mask.data_ptr(), cw.values.data_ptr(), cw.rowptr.data_ptr(),
        cw.scales.data_ptr() if cw.scales.numel() else 0, rowsum.data_ptr() if rowsum.numel() else 0,
        bias.data_ptr() if bias is not None else 0, cw.index == "delta",
    )  # fmt: skip


def _current_code() -> int:
    if _forced is not None:
        return _forced
    return _default_code


def _default_isa_code() -> int:
    env = os.environ.get("SPARSEFT_ISA")
    return _isa_code(env) if env else _kernels.best_isa()


def set_num_threads(n: int | None) -> None:
    """Threads for the kernels; None follows ``torch.get_num_threads()``."""
    global _threads
    _threads = n


def num_threads() -> int:
    return _threads or torch.get_num_threads()


_default_code = _default_isa_code()

# AMX: smallest batch (rows of x) run on the AMX kernels; below, the AVX-512 kernels measured faster
# (benchmarks/bench_kernels.py --amx-crossover, BENCHMARKS.md).
AMX_MIN_BATCH = {"bf16": 4, "int8": 3}
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


def _amx_thresholds() -> tuple[int, int]:
    """(bf16, int8) smallest batch on AMX for the C side; 0 = never."""
    if _amx_mode == "off" or _current_code() != ISAS.index("avx512") or not amx_available():
        return 0, 0
    if _amx_mode == "on":
        return 1, 1
    if _forced is not None:  # a forced ISA runs its own kernels (tests of each path)
        return 0, 0
    return AMX_MIN_BATCH["bf16"], AMX_MIN_BATCH["int8"]


def amx_used(fmt: str, batch: int, in_features: int, index: str = "bitmask") -> bool:
    """Whether a call with these weights and ``batch`` rows of x runs on the AMX kernels now."""
    t = dict(zip(("bf16", "int8"), _amx_thresholds(), strict=True)).get(fmt, 0)
    return index == "bitmask" and t > 0 and batch >= t and (fmt != "int8" or in_features <= 65536)


def _sync_amx() -> None:
    _kernels.set_amx(*_amx_thresholds())


set_amx(os.environ.get("SPARSEFT_AMX", "auto"))


def row_sums(cw: CompressedWeight) -> torch.Tensor:
    """int32 sum of each row's int8 values (the VNNI kernel's offset correction); empty otherwise."""
    if cw.fmt != "int8":
        return torch.zeros(0, dtype=torch.int32)
    cached = getattr(cw, "_rowsum", None)
    if cached is not None:
        return cached
    m = cw.shape[0]
    rows = torch.repeat_interleave(torch.arange(m), cw.rowptr.diff())
    sums = torch.zeros(m, dtype=torch.int64).index_add_(0, rows, cw.values[: cw.nnz].long())
    cw._rowsum = sums.int()  # derived data, cached on the object (not a dataclass field: never saved)
    return cw._rowsum


def matmul_raw(
    x2d: torch.Tensor,
    fmt: str,
    shape: tuple[int, int],
    mask: torch.Tensor,
    values: torch.Tensor,
    rowptr: torch.Tensor,
    scales: torch.Tensor,
    rowsum: torch.Tensor,
    bias: torch.Tensor | None,
    index: str = "bitmask",
) -> torch.Tensor:
    """y = x2d @ W^T + bias on the C kernels; x2d: float32 (N, K), any strides. Returns (N, M) fp32."""
    m, k = shape
    if x2d.dtype != torch.float32 or x2d.dim() != 2 or x2d.shape[1] != k:
        raise ConfigError(f"expected float32 x of shape (N, {k}), got {x2d.dtype} {tuple(x2d.shape)}")
    y = torch.empty(x2d.shape[0], m, dtype=torch.float32)
    b = (
        bias
        if bias is None or (bias.dtype == torch.float32 and bias.is_contiguous())
        else bias.float().contiguous()
    )
    _kernels.matmul(
        _FMT_CODE[fmt], _current_code(), m, k, (k + 63) // 64,
        mask.data_ptr(), values.data_ptr(), rowptr.data_ptr(),
        scales.data_ptr() if scales.numel() else 0, rowsum.data_ptr() if rowsum.numel() else 0,
        b.data_ptr() if b is not None else 0,
        x2d.data_ptr(), x2d.shape[0], x2d.stride(0), x2d.stride(1), y.data_ptr(), num_threads(),
        index == "delta",
    )  # fmt: skip
    return y


def sparse_matmul(x: torch.Tensor, cw: CompressedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W^T + bias for x of shape (..., K) in any float dtype; returns fp32 (..., M)."""
    lead = x.shape[:-1]
    x2d = x.detach().reshape(-1, x.shape[-1]).float()
    y = matmul_raw(
        x2d, cw.fmt, cw.shape, cw.mask, cw.values, cw.rowptr, cw.scales, row_sums(cw), bias, cw.index
    )
    return y.reshape(*lead, cw.shape[0])


def check_w8a8(cw: CompressedWeight) -> None:
    """Raise ConfigError unless ``cw`` can run on the W8A8 kernels (int8 values, bitmask, K <= 65536)."""
    if cw.fmt != "int8" or cw.index != "bitmask":
        raise ConfigError(
            f"int8 activations need int8 values in the bitmask index, got {cw.fmt} values, {cw.index} index; "
            "compress the layer with fmt='int8', index='bitmask'"
        )
    if cw.shape[1] > W8A8_MAX_K:
        raise ConfigError(f"int8 activations support in_features <= {W8A8_MAX_K}, got {cw.shape[1]}")


def w8a8_matmul_raw(
    x2d: torch.Tensor,
    shape: tuple[int, int],
    mask: torch.Tensor,
    values: torch.Tensor,
    rowptr: torch.Tensor,
    scales: torch.Tensor,
    rowsum: torch.Tensor,
    bias: torch.Tensor | None,
    input_scale: float = 0.0,
    raw_acc: bool = False,
) -> torch.Tensor:
    """y = Q(x2d) @ Wq^T (int32) * x_scale * w_scale + bias on the W8A8 kernels; x2d float32 (N, K).

    ``input_scale`` 0: dynamic per-token scales (max|x| / 127); > 0: that static scale. ``raw_acc``:
    return the int32 (N, M) integer dot products instead (tests)."""
    m, k = shape
    if x2d.dtype != torch.float32 or x2d.dim() != 2 or x2d.shape[1] != k:
        raise ConfigError(f"expected float32 x of shape (N, {k}), got {x2d.dtype} {tuple(x2d.shape)}")
    y = torch.empty(x2d.shape[0], m, dtype=torch.int32 if raw_acc else torch.float32)
    b = bias if bias is None or (bias.dtype == torch.float32 and bias.is_contiguous()) else bias.float().contiguous()
    _kernels.w8a8_matmul(
        _current_code(), m, k, (k + 63) // 64, mask.data_ptr(), values.data_ptr(), rowptr.data_ptr(),
        scales.data_ptr(), rowsum.data_ptr(), b.data_ptr() if b is not None else 0,
        x2d.data_ptr(), x2d.shape[0], x2d.stride(0), x2d.stride(1), y.data_ptr(), num_threads(),
        float(input_scale), raw_acc,
    )  # fmt: skip
    return y


def sparse_matmul_w8a8(
    x: torch.Tensor,
    cw: CompressedWeight,
    bias: torch.Tensor | None = None,
    input_scale: float | None = None,
    raw_acc: bool = False,
) -> torch.Tensor:
    """W8A8 y = x @ W^T + bias for x (..., K): x quantized to int8 per token (or with the static
    ``input_scale``), int32 dot products with the int8 weight; returns fp32 (..., M) (int32 if raw_acc)."""
    check_w8a8(cw)
    lead = x.shape[:-1]
    x2d = x.detach().reshape(-1, x.shape[-1]).float()
    y = w8a8_matmul_raw(
        x2d, cw.shape, cw.mask, cw.values, cw.rowptr, cw.scales, row_sums(cw), bias, input_scale or 0.0, raw_acc
    )
    return y.reshape(*lead, cw.shape[0])
