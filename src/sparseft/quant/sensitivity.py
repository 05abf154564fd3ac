"""Per-layer quantization sensitivity: relative output error of each layer on calibration inputs.

One forward pass of the full-precision model over a few calibration batches; a forward hook on each
layer compares its real output y = W x + b with the output of the quantized layer on the same input:

- `weight_error`: ||Q(W) x - W x||^2 / ||W x + b||^2 (W8A16),
- `w8a8_error`:  ||Q(W) Q_tok(x) - W x||^2 / ||W x + b||^2 (W8A8, dynamic per-token activations),
- `outlier_ratio`: max|x| / rms(x) of the inputs, which explains most large W8A8 errors (a token with
  one huge channel puts all its other channels on a coarse grid).

Every layer sees full-precision inputs, so errors are per layer, not accumulated. Cheap: no extra
forward passes, one quantized matmul per layer per batch.

A layer's own relative error averages over tokens and hides rare outlier tokens: on SmolLM2-135M the
v_proj layers have the largest W8A8 error, yet leaving them in fp32 does not move perplexity, while
leaving the down_proj layers in fp32 (inputs with max/rms up to ~900, against <= 80 elsewhere) cuts
the W8A8 perplexity loss by more than half. So read `outlier_ratio` too
(`suggest_ignore(100, key="outlier_ratio")`), or measure the loss: `group_loss_sensitivity` quantizes
one kind of layer (all q_proj, all down_proj, ...) at a time, one forward over the batches per kind
(on a few hundred tokens its differences are within noise; give it enough tokens).

    >>> report = layer_sensitivity(model, calib_batches)
    >>> print(report.format(max_rows=10))                 # worst layers first
    >>> ignore = report.suggest_ignore(threshold=0.01)    # regexes for quantize_model(ignore=...)
    >>> ignore = report.suggest_ignore(100, key="outlier_ratio")
    >>> group_loss_sensitivity(model, calib_batches, "w8a8")
    {'down_proj': 0.011, 'gate_proj': 0.002, ...}          # loss increase (nats/token), worst first
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sparseft.models.hooks import run_with_hooks
from sparseft.models.layers import mask_for
from sparseft.models.walk import find_prunable, weight_matrix
from sparseft.quant.activations import fake_quantize_per_token
from sparseft.quant.fakequant import QuantScheme, quantize_model
from sparseft.quant.weights import fake_quantize_weight


@dataclass
class LayerSensitivity:
    name: str
    shape: tuple[int, int]
    weight_error: float
    w8a8_error: float
    outlier_ratio: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "weight_error": self.weight_error,
                "w8a8_error": self.w8a8_error, "outlier_ratio": self.outlier_ratio}  # fmt: skip


@dataclass
class SensitivityReport:
    """Layers sorted by W8A8 error, worst first."""

    layers: list[LayerSensitivity] = field(default_factory=list)

    def suggest_ignore(self, threshold: float = 0.01, key: str = "w8a8_error") -> list[str]:
        """Anchored regexes (`^name$`) of the layers whose `key` error exceeds `threshold`."""
        return [f"^{re.escape(r.name)}$" for r in self.layers if getattr(r, key) > threshold]

    def as_dict(self) -> dict[str, Any]:
        return {"layers": [r.as_dict() for r in self.layers]}

    def format(self, max_rows: int | None = None) -> str:
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        width = max([len(r.name) for r in rows] + [5])
        lines = [f"{'layer':<{width}}  {'shape':>11}  {'w8a16 err':>9}  {'w8a8 err':>9}  {'max/rms x':>9}"]
        for r in rows:
            shape = "x".join(map(str, r.shape))
            lines.append(f"{r.name:<{width}}  {shape:>11}  {r.weight_error:>9.2e}  {r.w8a8_error:>9.2e}"
                         f"  {r.outlier_ratio:>9.1f}")  # fmt: skip
        if max_rows is not None and len(self.layers) > max_rows:
            lines.append(f"... {len(self.layers) - max_rows} more layers")
        return "\n".join(lines)


class _ErrorMeter:
    """Sums over batches of squared errors and squared reference outputs of one layer."""

    def __init__(self, module: nn.Module, granularity: str, mask: Tensor | None) -> None:
        W = weight_matrix(module).detach()
        self.shape = (W.shape[0], W.shape[1])
        self.Wq = fake_quantize_weight(W, granularity, mask)
        self.bias = getattr(module, "bias", None)
        self.err_w = self.err_wa = self.ref = 0.0
        self.amax = self.sumsq = self.count = 0.0

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> None:
        x = args[0].detach()
        y = (output if isinstance(output, Tensor) else output[0]).detach().float()
        bias = None if self.bias is None else self.bias.detach()
        y_w = F.linear(x, self.Wq, bias).float()
        y_wa = F.linear(fake_quantize_per_token(x), self.Wq, bias).float()
        self.err_w += float((y_w - y).pow(2).sum())
        self.err_wa += float((y_wa - y).pow(2).sum())
        self.ref += float(y.pow(2).sum())
        xf = x.float()
        self.amax = max(self.amax, float(xf.abs().amax()))
        self.sumsq += float(xf.pow(2).sum())
        self.count += xf.numel()

    def result(self, name: str) -> LayerSensitivity:
        ref = self.ref if self.ref > 0 else math.inf
        rms = math.sqrt(self.sumsq / self.count) if self.count else 0.0
        return LayerSensitivity(name, self.shape, self.err_w / ref, self.err_wa / ref,
                                self.amax / rms if rms > 0 else 0.0)  # fmt: skip


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    targets: str | Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
    granularity: str = "per_channel",
    masks: Mapping[str, Tensor] | None = None,
) -> SensitivityReport:
    """Relative output errors of int8 weight-only and W8A8 quantization, layer by layer (see module doc)."""
    layers = find_prunable(model, targets, ignore)
    meters = {
        name: _ErrorMeter(m, granularity, mask_for(masks, name, m))
        for name, m in layers.items()
    }
    run_with_hooks(model, {layers[name]: meter for name, meter in meters.items()}, batches)
    rows = [meter.result(name) for name, meter in meters.items() if meter.count]
    return SensitivityReport(sorted(rows, key=lambda r: r.w8a8_error, reverse=True))


def _mean_loss(model: nn.Module, batches: Sequence[Mapping[str, Any]]) -> float:
    losses = [float(model(**batch, labels=batch["input_ids"]).loss) for batch in batches]
    return sum(losses) / len(losses)


@torch.no_grad()
def group_loss_sensitivity(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    scheme: str | QuantScheme = "w8a8",
    masks: Mapping[str, Tensor] | None = None,
    groups: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Loss increase (mean next-token NLL, nats) when only the layers of one group are quantized.

    `groups`: label -> regex; default one group per layer kind (the last name component, e.g.
    'down_proj'). Causal-LM batches with `input_ids`. The model is restored after each group.
    """
    layers = find_prunable(model)
    if groups is None:
        kinds = dict.fromkeys(name.rsplit(".", 1)[-1] for name in layers)
        groups = {kind: rf"\.{re.escape(kind)}$" for kind in kinds}
    base = _mean_loss(model, batches)
    deltas = {}
    for label, pattern in groups.items():
        chosen = find_prunable(model, targets=pattern)
        saved = {name: weight_matrix(m).detach().clone() for name, m in chosen.items()}
        fq = quantize_model(model, scheme, targets=pattern, masks=masks)
        try:
            deltas[label] = _mean_loss(model, batches) - base
        finally:
            fq.remove()
            for name, m in chosen.items():
                weight_matrix(m).copy_(saved[name])
    return dict(sorted(deltas.items(), key=lambda kv: kv[1], reverse=True))
