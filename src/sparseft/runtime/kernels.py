"""The one way into the C kernels: a weight packed once (`WeightHandle`), then `linear(x, handle)`.

    >>> from sparseft.runtime.format import compress
    >>> cw = compress(torch.randn(64, 96) * (torch.rand(64, 96) > 0.7), "bf16")
    >>> handle = pack_weight(cw, bias=None)                # once per layer: sizes + addresses
    >>> y = linear(torch.randn(3, 96), handle)             # (3, 64) = x @ W^T, per call
    >>> y = sparse_matmul(torch.randn(3, 96), cw)          # the same, packing per call
    >>> with forced_isa("portable"):                        # run the portable C path (tests)
    ...     y2 = sparse_matmul(torch.randn(3, 96), cw)

Kernels by batch size on AVX-512: 1 -> SpMV with expand loads; 2-12 -> each decoded word reused for up
to 16 rows of x; more -> per-row nonzero lists against x transposed in tiles of 32 (zeros cost nothing);
AMX and the ISA / thread settings: see runtime/isa.py.

The activation mode is part of the handle: "none" (fp32 activations) or, for int8 values in the bitmask
index, "dynamic-int8" / "static-int8" (W8A8: x quantized to int8 per token / with one fixed scale, VNNI
integer dot products; see csrc/w8a8_common.h):

    >>> cw = compress(torch.randn(64, 96) * (torch.rand(64, 96) > 0.7), "int8")
    >>> y = linear(x, pack_weight(cw, act="dynamic-int8"))
    >>> y = sparse_matmul_w8a8(torch.randn(3, 96), cw)                  # x quantized per token
    >>> y = sparse_matmul_w8a8(torch.randn(3, 96), cw, input_scale=0.02)  # static per-tensor scale
"""

from __future__ import annotations

import torch

from sparseft.errors import ConfigError
from sparseft.runtime import _kernels
from sparseft.runtime.dense_batch import DenseCopy, dense_rows, takes_weight_only_copy
from sparseft.runtime.format import CompressedWeight
from sparseft.runtime.formats import check_kernel_table
from sparseft.runtime.isa import (  # noqa: F401  (the settings, re-exported: one import for callers)
    AMX_MIN_BATCH,
    AMX_MODES,
    ISAS,
    amx_available,
    amx_used,
    best_isa,
    current_isa,
    forced_amx,
    forced_isa,
    isa_code,
    num_threads,
    set_amx,
    set_isa,
    set_num_threads,
)

check_kernel_table(_kernels.formats())  # a stale or mismatched C build fails here, not with wrong numbers

# Activation modes: fp32 activations, or int8 ones quantized per token / with a fixed scale. The C side
# knows two (0: fp32, 1: int8; the scale tells dynamic (0) from static).
ACT_MODES = ("none", "dynamic-int8", "static-int8")
_ACT_CODE = {"none": 0, "dynamic-int8": 1, "static-int8": 1}


def row_sums(cw: CompressedWeight) -> torch.Tensor:
    """int32 sum of each row's values where the format's kernels need it (int8); empty otherwise."""
    cached = getattr(cw, "_rowsum", None)
    if cached is None:
        cached = cw._rowsum = cw.format.row_sums(cw.values, cw.rowptr)  # derived: never a saved field
    return cached


def check_w8a8(cw: CompressedWeight) -> None:
    """Raise ConfigError unless ``cw`` can run with int8 activations (an int8-activation format, bitmask
    index, in_features within the exact int32 range)."""
    fmt = cw.format
    if not fmt.supports_int8_activations or cw.index != "bitmask":
        raise ConfigError(
            f"int8 activations need int8 values in the bitmask index, got {cw.fmt} values, {cw.index} index; "
            "compress the layer with fmt='int8', index='bitmask'"
        )
    if fmt.int_sum_max_k is not None and cw.shape[1] > fmt.int_sum_max_k:
        raise ConfigError(f"int8 activations support in_features <= {fmt.int_sum_max_k}, got {cw.shape[1]}")


class WeightHandle:
    """A weight's kernel arguments packed once: a C capsule of its sizes, addresses and activation mode.

    It keeps the tensors it points into alive, so it never dangles; a layer whose buffers are replaced
    builds a new one (SparseLinear does on assignment and on load)."""

    __slots__ = ("capsule", "out_features", "in_features", "act", "act_code", "input_scale", "tensors", "cw",
                 "dense_ok", "_dense")

    def __init__(
        self,
        cw: CompressedWeight,
        bias: torch.Tensor | None = None,
        act: str = "none",
        input_scale: float = 0.0,
        rowsum: torch.Tensor | None = None,
    ) -> None:
        if act not in ACT_MODES:
            raise ConfigError(f"unknown activation mode {act!r}; expected one of {', '.join(ACT_MODES)}")
        cw.validate()
        if act != "none":
            check_w8a8(cw)
        if not input_scale >= 0.0:
            raise ConfigError(f"input_scale must be >= 0 (0: per-token scales), got {input_scale}")
        m, k = cw.shape
        if bias is not None:
            bias = bias.detach().to("cpu", torch.float32).contiguous()
            if bias.shape != (m,):
                raise ConfigError(f"bias must have {m} elements, got shape {tuple(bias.shape)}")
        rowsum = row_sums(cw) if rowsum is None else rowsum
        self.tensors = (cw.mask, cw.values, cw.rowptr, cw.scales, rowsum, bias)
        # large batches may multiply by a dense copy (dense_batch.py): int8 codes for W8A8, else bf16 or fp32
        # decoded weights as the CPU prefers
        self.cw, self._dense = cw, None
        self.dense_ok = act != "none" or takes_weight_only_copy(cw.format.dense_bf16, cw.density)
        self.out_features, self.in_features = m, k
        self.act, self.act_code, self.input_scale = act, _ACT_CODE[act], float(input_scale)
        self.capsule = _kernels.pack(
            cw.format.kernel_id, cw.index == "delta", m, k, cw.mask.data_ptr(), cw.values.data_ptr(),
            cw.rowptr.data_ptr(), _addr(cw.scales), _addr(rowsum), _addr(bias),
        )  # fmt: skip

    @property
    def all_stored(self) -> bool:
        """True when every column is stored (a dense matrix in the bitmask layout, e.g. an int8 lm_head):
        its batch-1 AVX-512 kernels then read plain rows, no mask words and no expand."""
        return _kernels.all_stored(self.capsule)

    def dense(self) -> DenseCopy:
        """The dense copy large batches multiply by (runtime/dense_batch.py), made on first use."""
        if self._dense is None:
            self._dense = DenseCopy(self.cw, self.tensors[-1], self.act_code == 1)
        return self._dense


def _addr(t: torch.Tensor | None) -> int:
    return t.data_ptr() if t is not None and t.numel() else 0


def pack_weight(
    cw: CompressedWeight,
    bias: torch.Tensor | None = None,
    act: str = "none",
    input_scale: float | None = None,
) -> WeightHandle:
    """The `WeightHandle` of ``cw`` (+ bias) for activation mode ``act``; ``input_scale``: the static
    int8 input scale ("static-int8"; None / 0 = per-token scales)."""
    return WeightHandle(cw, bias, act, input_scale or 0.0)


def linear(x: torch.Tensor, handle: WeightHandle, raw_acc: bool = False) -> torch.Tensor:
    """y = x @ W^T + bias for x (..., K) in any float dtype, any strides; y (..., M) in x's dtype.

    The one Python function that calls the C matmul (eager SparseLinear, the ``sparseft::linear`` op and
    the wrappers below all come here), so it does only what every call needs. ``raw_acc`` (int8
    activations, tests): the int32 integer dot products instead of y."""
    k = handle.in_features
    if x.shape[-1] != k:
        raise ConfigError(f"expected x of shape (..., {k}), got {tuple(x.shape)}")
    x2d = x if x.dim() == 2 else x.reshape(-1, k)
    if x2d.dtype != torch.float32:
        x2d = x2d.float()
    n = x2d.shape[0]
    if n > 1 and handle.dense_ok and not raw_acc and n >= dense_rows(handle.act_code == 1) > 0:  # large batches: a dense product (dense_batch.py)
        y = handle.dense().linear(x2d, handle.input_scale)
        return _shaped(y, x, handle.out_features)
    y = torch.empty(n, handle.out_features, dtype=torch.int32 if raw_acc else torch.float32)
    _kernels.linear(
        handle.capsule, x2d.data_ptr(), n, x2d.stride(0), x2d.stride(1), y.data_ptr(), isa_code(), num_threads(),
        handle.act_code, handle.input_scale, raw_acc,
    )  # fmt: skip
    return y if raw_acc else _shaped(y, x, handle.out_features)


def _shaped(y: torch.Tensor, x: torch.Tensor, out_features: int) -> torch.Tensor:
    """y (N, M) fp32 as x's leading shape and dtype."""
    if x.dim() != 2:
        y = y.view(*x.shape[:-1], out_features)
    return y if x.dtype == torch.float32 else y.to(x.dtype)


def sparse_matmul(x: torch.Tensor, cw: CompressedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W^T + bias for x of shape (..., K) in any float dtype; returns fp32 (..., M)."""
    return linear(x.detach().float(), pack_weight(cw, bias))


def sparse_matmul_w8a8(
    x: torch.Tensor,
    cw: CompressedWeight,
    bias: torch.Tensor | None = None,
    input_scale: float | None = None,
    raw_acc: bool = False,
) -> torch.Tensor:
    """W8A8 y = x @ W^T + bias for x (..., K): x quantized to int8 per token (or with the static
    ``input_scale``), int32 dot products with the int8 weight; returns fp32 (..., M) (int32 if raw_acc)."""
    act = "static-int8" if input_scale else "dynamic-int8"
    return linear(x.detach().float(), pack_weight(cw, bias, act, input_scale), raw_acc)
