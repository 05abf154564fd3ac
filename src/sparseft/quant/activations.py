"""Symmetric int8 activation quantization: dynamic per token, or static per tensor from calibration.

Dynamic per-token (the default of W8A8): each token's vector x (last dim) gets its own scale
max|x| / 127 at run time, so one outlier token does not flatten the others. Static per-tensor: one
scale fixed beforehand from the largest |x| seen on calibration samples (`AbsMaxObserver`); cheaper at
run time but clips when inference meets a larger value than calibration did.

    >>> x = torch.randn(2, 5, 64)
    >>> q, s = quantize_per_token(x)                  # int8 (2, 5, 64), scales (2, 5, 1)
    >>> bool(((x - q * s).abs() <= s / 2 + 1e-6).all())
    True
    >>> obs = AbsMaxObserver()
    >>> for batch in (x, 2 * x): obs.observe(batch)
    >>> y = fake_quantize_static(x, obs.scale())
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparseft.quant.weights import QMAX, absmax_scale


def _compute(x: Tensor) -> Tensor:
    return x.detach().to(torch.promote_types(x.dtype, torch.float32))


def per_token_scale(x: Tensor) -> Tensor:
    """Scales (..., 1): max|x| over the last dim / 127 (1 for an all-zero token)."""
    return absmax_scale(_compute(x).abs().amax(dim=-1, keepdim=True))


def quantize_activation(x: Tensor, scale: Tensor) -> Tensor:
    """int8 clamp(round(x / scale), -127, 127); `scale` broadcasts (per token (..., 1) or 0-d)."""
    xc = _compute(x)
    return torch.round(xc / scale.to(xc.device, xc.dtype)).clamp_(-QMAX, QMAX).to(torch.int8)


def quantize_per_token(x: Tensor) -> tuple[Tensor, Tensor]:
    """(int8 q, scales (..., 1)) with x ~= q * scales, |x - q * scales| <= scales / 2."""
    scale = per_token_scale(x)
    return quantize_activation(x, scale), scale


def fake_quantize_per_token(x: Tensor) -> Tensor:
    """Quantize-dequantize x per token; same shape and dtype as x."""
    q, scale = quantize_per_token(x)
    return (q.to(scale.dtype) * scale).to(x.dtype)


def fake_quantize_static(x: Tensor, scale: Tensor) -> Tensor:
    """Quantize-dequantize x with a fixed per-tensor scale (values beyond 127 * scale are clipped)."""
    s = scale.to(x.device, torch.promote_types(x.dtype, torch.float32))
    return (quantize_activation(x, s).to(s.dtype) * s).to(x.dtype)


class AbsMaxObserver:
    """Running max|x| over calibration batches -> one static per-tensor scale.

        >>> obs = AbsMaxObserver(); obs.observe(torch.tensor([0.5, -2.54]))
        >>> float(obs.scale())
        0.02
    """

    def __init__(self) -> None:
        self.amax = torch.zeros((), dtype=torch.float32)
        self.count = 0

    def observe(self, x: Tensor) -> None:
        self.amax = torch.maximum(self.amax, x.detach().abs().amax().float().cpu())
        self.count += 1

    def scale(self) -> Tensor:
        """0-d fp32 scale = max|x| / 127 (1 if nothing nonzero was seen)."""
        return absmax_scale(self.amax)
