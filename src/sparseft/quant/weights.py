"""Symmetric int8 weight quantization that keeps every zero: pure functions on tensors.

A weight W (out_features, in_features) becomes int8 `q` and fp32 scales `s` with W ~= q * s:
per output channel (default) `s[r] = max|W[r]| / 127`, or one scale per tensor. The grid is symmetric
(no zero point), so 0 maps to 0 exactly and a pruned weight stays pruned; a `mask` (True = kept) forces
the pruned entries to 0 even if the weight itself holds something there. These are the same scales and
rounding as the runtime's int8 format (`sparseft.runtime.format`), so a fake-quantized weight compresses
to the very same int8 values.

    >>> W = torch.randn(4, 8) * (torch.rand(4, 8) > 0.5)
    >>> wq = quantize_weight(W)                          # per output channel
    >>> wq.q.dtype, wq.scale.shape
    (torch.int8, torch.Size([4, 1]))
    >>> bool(((W - dequantize_weight(wq.q, wq.scale)).abs() <= wq.scale / 2 + 1e-7).all())
    True
    >>> bool((fake_quantize_weight(W)[W == 0] == 0).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sparseft.errors import ConfigError

QMAX = 127  # symmetric: -127..127; -128 is left out so that the grid is the same on both sides
GRANULARITIES = ("per_channel", "per_tensor")


@dataclass(frozen=True)
class QuantizedWeight:
    """int8 values `q` (same shape as W) and scales: (out, 1) per channel, () per tensor."""

    q: Tensor
    scale: Tensor

    def dequantize(self) -> Tensor:
        return dequantize_weight(self.q, self.scale)


def _compute_dtype(t: Tensor) -> torch.dtype:
    # bf16/fp16 weights are quantized in fp32; fp64 stays fp64 (the tests check the bound exactly).
    return torch.promote_types(t.dtype, torch.float32)


def absmax_scale(amax: Tensor) -> Tensor:
    """scale = amax / 127, and 1 where amax is 0 (an all-zero row quantizes to zeros with any scale)."""
    return torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))


def weight_scale(W: Tensor, granularity: str = "per_channel", mask: Tensor | None = None) -> Tensor:
    """Scales of W (out, in): (out, 1) per output channel, a 0-d tensor per tensor.

    Only kept weights (mask True) count toward max|W|.
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(f"weight granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if W.dim() != 2:
        raise ConfigError(f"expected a 2-D weight (out_features, in_features), got shape {tuple(W.shape)}")
    absW = W.detach().to(_compute_dtype(W)).abs()
    if mask is not None:
        absW = absW * mask.to(absW.device, torch.bool)
    amax = absW.amax(dim=1, keepdim=True) if granularity == "per_channel" else absW.amax()
    return absmax_scale(amax)


def quantize_with_scale(W: Tensor, scale: Tensor, mask: Tensor | None = None) -> Tensor:
    """int8 q = clamp(round(W / scale), -127, 127), and 0 wherever `mask` is False.

    `scale` broadcasts against W: (out, 1) or 0-d. Rounding is half to even (torch.round).
    """
    Wc = W.detach().to(_compute_dtype(W))
    q = torch.round(Wc / scale.to(Wc.device, Wc.dtype)).clamp_(-QMAX, QMAX)
    if mask is not None:
        q = q * mask.to(q.device, torch.bool)
    return q.to(torch.int8)


def quantize_weight(W: Tensor, granularity: str = "per_channel", mask: Tensor | None = None) -> QuantizedWeight:
    """Symmetric int8 quantization of W (out, in); zeros and masked-out entries become exactly 0."""
    scale = weight_scale(W, granularity, mask)
    return QuantizedWeight(quantize_with_scale(W, scale, mask), scale)


def dequantize_weight(q: Tensor, scale: Tensor) -> Tensor:
    """q * scale in the scale's dtype (fp32 for scales from fp32 or bf16 weights)."""
    return q.to(scale.dtype) * scale


def fake_quantize_weight(W: Tensor, granularity: str = "per_channel", mask: Tensor | None = None) -> Tensor:
    """Quantize-dequantize W, returned in W's dtype: the weight an int8 kernel effectively computes with."""
    return quantize_weight(W, granularity, mask).dequantize().to(W.dtype)
