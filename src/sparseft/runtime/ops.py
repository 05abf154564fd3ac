"""The sparse matmul as a torch.library custom op, so torch.compile treats it as one opaque call.

>>> y = torch.ops.sparseft.sparse_linear(x, "bf16", 576, mask, values, rowptr, scales, rowsum, bias)
>>> y = torch.ops.sparseft.sparse_linear_w8a8(x, 576, mask, values, rowptr, scales, rowsum, bias, 0.0)
"""

from __future__ import annotations

import torch

from sparseft.runtime.kernels import matmul_raw, w8a8_matmul_raw


@torch.library.custom_op("sparseft::sparse_linear", mutates_args=())
def sparse_linear(
    x: torch.Tensor,
    fmt: str,
    out_features: int,
    mask: torch.Tensor,
    values: torch.Tensor,
    rowptr: torch.Tensor,
    scales: torch.Tensor,
    rowsum: torch.Tensor,
    bias: torch.Tensor | None,
    index: str = "bitmask",
) -> torch.Tensor:
    """y = x @ W^T + bias with W in the bitmask format; x (..., K) any float dtype, y in x's dtype."""
    k = x.shape[-1]
    x2d = x.reshape(-1, k)
    if x2d.dtype != torch.float32:
        x2d = x2d.float()
    y = matmul_raw(x2d, fmt, (out_features, k), mask, values, rowptr, scales, rowsum, bias, index)
    return y.reshape(*x.shape[:-1], out_features).to(x.dtype)


@sparse_linear.register_fake
def _(x, fmt, out_features, mask, values, rowptr, scales, rowsum, bias, index="bitmask"):
    return x.new_empty(*x.shape[:-1], out_features)


@torch.library.custom_op("sparseft::sparse_linear_w8a8", mutates_args=())
def sparse_linear_w8a8(
    x: torch.Tensor,
    out_features: int,
    mask: torch.Tensor,
    values: torch.Tensor,
    rowptr: torch.Tensor,
    scales: torch.Tensor,
    rowsum: torch.Tensor,
    bias: torch.Tensor | None,
    input_scale: float = 0.0,
) -> torch.Tensor:
    """W8A8: x quantized to int8 per token (input_scale 0) or with a static scale, int8 weights in the
    bitmask format, int32 dot products; x (..., K) any float dtype, y in x's dtype."""
    k = x.shape[-1]
    x2d = x.reshape(-1, k)
    if x2d.dtype != torch.float32:
        x2d = x2d.float()
    y = w8a8_matmul_raw(x2d, (out_features, k), mask, values, rowptr, scales, rowsum, bias, input_scale)
    return y.reshape(*x.shape[:-1], out_features).to(x.dtype)


@sparse_linear_w8a8.register_fake
def _(x, out_features, mask, values, rowptr, scales, rowsum, bias, input_scale=0.0):
    return x.new_empty(*x.shape[:-1], out_features)
