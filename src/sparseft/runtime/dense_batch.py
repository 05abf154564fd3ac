"""Large batches of x on a dense copy of a sparse weight, where dense products beat the sparse kernels.

    >>> handle = pack_weight(compress(w * mask, "int8"))
    >>> y = linear(torch.randn(1500, 384), handle)       # 1500 rows: the dense bf16 product (see below)
    >>> with forced_dense_batches("off"):                # the sparse kernels at every batch (tests, benchmarks)
    ...     y = linear(torch.randn(1500, 384), handle)

At a few rows of x a decode step reads each weight once, so skipping zeros and reading fewer bytes pays.
At hundreds of rows (Whisper's 1500-frame encoder, a long prompt) the work is multiply-adds, and a CPU
with AVX512-BF16 and VNNI but no AMX (AMD Zen 4 / 5) runs dense bf16 products at ~4.6x and int8 ones at
~9x its fp32 rate (oneDNN, one Zen 5 core, 1500 x 384 x 1536: fp32 107 GFLOP/s, bf16 492, int8 1006),
while the sparse kernels compute in fp32 (weight-only formats) or skip zeros one word at a time (W8A8).
So from `DENSE_MIN_ROWS` rows on (6 for fp32 activations, 24 for int8 ones), such a CPU multiplies by a dense copy made on first use and kept
with the layer's kernel handle (never saved):

- weight-only formats whose values are no finer than bf16 (bf16, int8, int4; fp32 activations): bf16
  copies of x and of the decoded weight, one oneDNN bf16 product (fp32 accumulation, the result rounded once to bf16,
  as bf16 inference in PyTorch does), bias added in fp32;
- W8A8 (int8 activations): x quantized exactly as the sparse kernels do (`quantize_rows`: per token or
  the static scale), ``torch._int_mm`` against the int8 codes, then the same epilogue
  ``acc * x_scale * w_scale + bias``: the int32 sums are exact, so the result is the sparse kernels'
  bit for bit.

fp32 and fp16 values keep the sparse kernels there (bf16 would round them), as on AMX. A CPU with AVX-512
VNNI but neither AVX512-BF16 nor AMX (Intel Ice Lake, Cascade Lake) has no fast bf16 product, so its
weight-only copies are fp32 (every value format decodes exactly), multiplied by PyTorch's fp32 GEMM from
32 rows, except layers with fewer than `FP32_COPY_MIN_DENSITY` of their weights stored (80%+ sparse), whose
sparse kernels skip enough work to stay ahead; its W8A8 layers take ``torch._int_mm`` (VNNI) from 24 rows as above. Measured on an Ice Lake core
(Whisper tiny's 384 <-> 1536, 50 / 70%): weight-only int8 sparse / dense fp32 1.1-1.6 at 32 rows, 1.7-2.9 at
1500; W8A8 sparse / ``_int_mm`` 1.3-3.5 at 32 rows, 2.6-5.5 at 1500. CPUs with AMX keep their sparse AMX
kernels (measured there, csrc/kern_amx.c), other CPUs (no AVX-512 VNNI) keep the sparse kernels (not
measured), and so does a forced ISA (``forced_isa``: the tests of each kernel path).
``set_dense_batches`` / ``forced_dense_batches`` / env ``SPARSEFT_DENSE_BATCHES`` ("auto"; "on": any CPU,
from 2 rows; "off") override the choice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from sparseft.errors import ConfigError
from sparseft.runtime import _kernels
from sparseft.runtime.isa import isa_code, isa_forced

# Rows of x from which the dense products win, by the weight-only copies' dtype and "int8 activations"
# (benchmarks/dense_batch_crossover.py, 1 thread, Whisper tiny's 384 <-> 1536 at 50 / 70%). bf16 (Zen 5):
# weight-only int8 sparse / dense bf16 0.84-0.88 at 2 rows, 1.4-1.7 at 6, 2.3-3.3 at 1500; W8A8 sparse / dense
# int8 0.45-0.69 at 2, 0.91-1.62 at 16, 1.25-2.0 at 24, 2.1-3.2 at 1500. fp32 (Ice Lake): sparse / dense fp32
# 0.64-0.86 at 8 rows, 1.07-1.58 at 32, 1.66-2.85 at 1500; W8A8 0.82-1.42 at 8, 1.33-3.5 at 32.
DENSE_MIN_ROWS = {torch.bfloat16: {False: 6, True: 24}, torch.float32: {False: 32, True: 24}}
# Sparser weight-only layers keep the sparse kernels under fp32 copies: they skip enough work there (Ice Lake,
# GPT-2's 768 <-> 3072, sparse / dense fp32 at 128-512 rows: 1.1-1.5 at 70%, 0.95-1.2 at 80%, 0.68-0.91 at 90%).
FP32_COPY_MIN_DENSITY = 0.2
MODES = ("auto", "on", "off")
_mode = "auto"


def _cpu_copy_dtype() -> torch.dtype | None:
    """The dtype of weight-only dense copies where this CPU prefers dense products at large batches: bf16
    with AVX512-BF16 and no AMX tiles, fp32 with AVX-512 VNNI and neither; None: keep the sparse kernels."""
    if torch.cpu._is_amx_tile_supported():
        return None
    if torch.cpu._is_avx512_bf16_supported():
        return torch.bfloat16
    if torch.cpu._is_avx512_supported() and torch.cpu._is_vnni_supported():
        return torch.float32
    return None


COPY_DTYPE = _cpu_copy_dtype()  # once: the CPU does not change while running; None: no preference


def takes_weight_only_copy(format_bf16_exact: bool, density: float) -> bool:
    """Whether a weight-only layer may multiply large batches by a dense copy: a bf16 copy needs values no
    finer than bf16; an fp32 one holds any values, from `FP32_COPY_MIN_DENSITY` of the weights stored."""
    if copy_dtype() == torch.float32:
        return density >= FP32_COPY_MIN_DENSITY
    return format_bf16_exact


def copy_dtype() -> torch.dtype:
    """The dtype weight-only dense copies are made in now (bf16 where this CPU has no preference: "on")."""
    return COPY_DTYPE or torch.bfloat16


def set_dense_batches(mode: str | None) -> None:
    """"auto" (or None): dense products from `DENSE_MIN_ROWS` rows of x where the CPU prefers them; "on":
    on any CPU from 2 rows (tests, the crossover benchmark); "off": never (the sparse kernels at every batch)."""
    global _mode
    mode = mode or "auto"
    if mode not in MODES:
        raise ConfigError(f"unknown dense-batch mode {mode!r}; expected one of {', '.join(MODES)}")
    _mode = mode


@contextlib.contextmanager
def forced_dense_batches(mode: str) -> Iterator[None]:
    """Context manager: ``set_dense_batches(mode)`` inside the block."""
    old = _mode
    set_dense_batches(mode)
    try:
        yield
    finally:
        set_dense_batches(old)


def dense_rows(int8_activations: bool = False) -> int:
    """Smallest batch (rows of x) of a weight-only / W8A8 layer that runs on the dense copy now; 0 = never.
    ("on": 2, every batch but a single row, which stays on the batch-1 kernels.)"""
    if _mode == "on":
        return 2
    auto = _mode == "auto" and COPY_DTYPE is not None and not isa_forced()
    return DENSE_MIN_ROWS[copy_dtype()][int8_activations] if auto else 0


class DenseCopy:
    """The dense operand of one weight: bf16 or fp32 (M, K) decoded weights (`copy_dtype`), or int8 (K, M)
    codes for W8A8."""

    __slots__ = ("weight", "wscale", "bias")

    def __init__(self, cw: object, bias: torch.Tensor | None, int8_activations: bool) -> None:
        if int8_activations:
            self.weight = cw.dense_codes().t().contiguous()  # (K, M): _int_mm's second operand
            self.wscale = cw.scales
        else:
            self.weight = cw.decompress().to(copy_dtype())
            self.wscale = None
        self.bias = bias

    def linear(self, x2d: torch.Tensor, input_scale: float) -> torch.Tensor:
        """fp32 y (N, M) = x2d (N, K, fp32) @ W^T + bias."""
        if self.wscale is None and self.weight.dtype == torch.float32:
            return torch.nn.functional.linear(x2d, self.weight, self.bias)
        if self.wscale is None:
            y = torch.matmul(x2d.to(torch.bfloat16), self.weight.t()).float()
            return y if self.bias is None else y.add_(self.bias)
        q, xscale = quantize_rows(x2d, input_scale)
        y = torch._int_mm(q, self.weight).float().mul_(xscale).mul_(self.wscale)  # the kernels' epilogue order
        return y if self.bias is None else y.add_(self.bias)


def quantize_rows(x2d: torch.Tensor, input_scale: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 q (N, K), fp32 scales (N, 1)) of fp32 x2d, rounded in C as the W8A8 kernels do (the same
    numbers as `sparseft.quant.activations.quantize_per_token`, or the static ``input_scale`` when > 0)."""
    x2d = x2d if x2d.stride(-1) == 1 else x2d.contiguous()
    n, k = x2d.shape
    q = torch.empty(n, k, dtype=torch.int8)
    scales = torch.empty(n, 1, dtype=torch.float32)
    _kernels.quantize_rows(x2d.data_ptr(), n, x2d.stride(0), k, q.data_ptr(), scales.data_ptr(), isa_code(),
                           float(input_scale))
    return q, scales


def env_mode() -> None:
    """Apply ``SPARSEFT_DENSE_BATCHES`` (read once at import)."""
    set_dense_batches(os.environ.get("SPARSEFT_DENSE_BATCHES", "auto"))


env_mode()
