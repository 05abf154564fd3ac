"""Fake-quantize the Linear layers of an HF model (quantize-dequantize in PyTorch) to measure accuracy.

Weights are replaced in place by their int8 grid values (q * scale, stored in the model's dtype), so the
model stays a plain HF model: `save_pretrained`, `generate()` and the runtime's int8 conversion work
unchanged, and the runtime recovers exactly the same int8 values. Activations of W8A8 layers are
fake-quantized by a forward pre-hook (dynamic per token, or static per tensor with scales calibrated on
samples); the hooks are not part of the weights and are re-attached on load from the saved scales.

    >>> fq = quantize_model(model, "w8a8", ignore=[r"mlp\\.down_proj$"])       # dynamic per-token acts
    >>> fq = quantize_model(model, "w8a8-static", calib_batches=batches)      # static per-tensor acts
    >>> fq = quantize_model(model, "w8a16")                                    # weight-only
    >>> fq = quantize_model(model, "w8a16", method="gptq", calib_batches=batches)  # error-compensated
    >>> sorted(fq.layers)[:1], fq.scheme.name
    (['model.layers.0.mlp.gate_proj'], 'w8a16')
    >>> fq.remove()                            # drops the activation hooks (weights stay quantized)

Layers: by default every Linear/Conv1D inside the transformer blocks (`find_prunable`), which leaves
embeddings and the (often tied) lm_head in full precision; `targets`/`ignore` are regexes on names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sparseft.errors import ConfigError, ModelError
from sparseft.models.hooks import run_with_hooks
from sparseft.models.layers import mask_for
from sparseft.models.walk import find_prunable, weight_matrix
from sparseft.quant.activations import AbsMaxObserver, fake_quantize_per_token, fake_quantize_static
from sparseft.quant.weights import GRANULARITIES, quantize_weight

ACTIVATION_MODES = ("dynamic", "static")
WEIGHT_METHODS = ("rtn", "gptq")
SCHEMES = {"w8a16": None, "w8a8": "dynamic", "w8a8-static": "static"}


@dataclass(frozen=True)
class QuantScheme:
    """What to quantize: int8 weights at `weights` granularity; activations None (weight-only),
    "dynamic" (per token) or "static" (per tensor, calibrated).

        >>> QuantScheme.parse("w8a8-static")
        QuantScheme(weights='per_channel', activations='static')
    """

    weights: str = "per_channel"
    activations: str | None = "dynamic"

    def __post_init__(self) -> None:
        if self.weights not in GRANULARITIES:
            raise ConfigError(f"weight granularity must be one of {', '.join(GRANULARITIES)}, got {self.weights!r}")
        if self.activations not in (None, *ACTIVATION_MODES):
            raise ConfigError(f"activations must be None, 'dynamic' or 'static', got {self.activations!r}")

    @classmethod
    def parse(cls, name: str, weights: str = "per_channel") -> QuantScheme:
        """'w8a16' | 'w8a8' (dynamic per-token) | 'w8a8-static' (static per-tensor)."""
        if name not in SCHEMES:
            raise ConfigError(f"unknown scheme {name!r}; expected one of {', '.join(SCHEMES)}")
        return cls(weights, SCHEMES[name])

    @property
    def name(self) -> str:
        return {None: "w8a16", "dynamic": "w8a8", "static": "w8a8-static"}[self.activations]


@dataclass
class LayerQuant:
    """One quantized layer: weight scales ((out, 1) or 0-d), activation mode and static input scale."""

    weight_scale: Tensor
    activations: str | None = None
    input_scale: Tensor | None = None


@dataclass
class FakeQuantizer:
    """The quantized layers of a model and the activation hooks that fake-quantize their inputs."""

    scheme: QuantScheme
    layers: dict[str, LayerQuant] = field(default_factory=dict)
    _handles: list = field(default_factory=list, repr=False)

    def attach(self, model: nn.Module) -> FakeQuantizer:
        """Install the activation pre-hooks on `model` (no-op for weight-only layers)."""
        self.remove()
        modules = dict(model.named_modules())
        for name, lq in self.layers.items():
            if lq.activations is not None:
                self._handles.append(modules[name].register_forward_pre_hook(_input_hook(lq)))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def scales_state_dict(self) -> dict[str, Tensor]:
        """'<layer>.weight_scale' ((out,) or 0-d) and '<layer>.input_scale' (static), fp32, for safetensors."""
        out = {}
        for name, lq in self.layers.items():
            out[f"{name}.weight_scale"] = lq.weight_scale.detach().float().reshape(-1).contiguous()
            if lq.input_scale is not None:
                out[f"{name}.input_scale"] = lq.input_scale.detach().float().reshape(1).contiguous()
        return out

    def record(self) -> dict[str, Any]:
        """JSON-able description: scheme and each layer's activation mode."""
        return {
            "scheme": self.scheme.name,
            "weights": self.scheme.weights,
            "activations": self.scheme.activations,
            "layers": {name: lq.activations for name, lq in self.layers.items()},
        }


def _input_hook(lq: LayerQuant):
    if lq.activations == "dynamic":
        def hook(module: nn.Module, args: tuple) -> tuple:
            return (fake_quantize_per_token(args[0]), *args[1:])
    else:
        scale = lq.input_scale

        def hook(module: nn.Module, args: tuple) -> tuple:
            return (fake_quantize_static(args[0], scale), *args[1:])

    return hook


@torch.no_grad()
def calibrate_input_scales(
    model: nn.Module, layers: Mapping[str, nn.Module], batches: Iterable[Mapping[str, Any]]
) -> dict[str, Tensor]:
    """Static per-tensor input scales (max|x| / 127) of `layers`, from `model(**batch)` forwards."""
    observers = {name: AbsMaxObserver() for name in layers}
    hooks = {module: (lambda m, args, obs=observers[name]: obs.observe(args[0])) for name, module in layers.items()}
    run_with_hooks(model, hooks, batches, pre=True)
    unseen = [name for name, obs in observers.items() if obs.count == 0]
    if unseen:
        raise ModelError(f"layers never ran on the calibration batches, cannot calibrate them: {unseen[:5]}")
    return {name: obs.scale() for name, obs in observers.items()}


def _round_weights(layers: Mapping[str, nn.Module], granularity: str, masks) -> dict[str, Tensor]:
    """Replace each layer's weight by its round-to-nearest int8 grid values in place; return the scales."""
    scales = {}
    for name, module in layers.items():
        W = weight_matrix(module)
        wq = quantize_weight(W, granularity, mask_for(masks, name, module))
        W.copy_(wq.dequantize().to(W.dtype))  # writes through Conv1D's transposed view too
        scales[name] = wq.scale.float()
    return scales


def _gptq_weights(model: nn.Module, layers: Mapping[str, nn.Module], masks, batches) -> dict[str, Tensor]:
    """GPTQ on every layer through the sequential driver (the one SparseGPT uses), in place; the scales.

    Block by block: each block's Hessians come from the outputs of the blocks already quantized, as in
    GPTQ's reference code, so a layer compensates the error of the layers before it too.
    """
    from sparseft.prune.driver import solve_sequentially  # sparseft.prune imports this package's solver

    fixed = {name: mask_for(masks, name, module) for name, module in layers.items()}
    report = solve_sequentially(model, batches, "gptq", layers, masks={n: m for n, m in fixed.items() if m is not None})
    return report.scales


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    scheme: str | QuantScheme = "w8a8",
    targets: str | Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
    masks: Mapping[str, Tensor] | None = None,
    calib_batches: Iterable[Mapping[str, Any]] | None = None,
    method: str = "rtn",
) -> FakeQuantizer:
    """Fake-quantize the selected layers of `model` in place; returns the scales and attached hooks.

    `masks` (layer name -> (out, in) keep-mask, as `sparseft.prune` returns and saves them) force pruned
    weights to zero; without masks, zeros stay zero anyway. Static activation scales need `calib_batches`
    and are measured before any weight changes (each layer sees full-precision inputs).
    `method`: "rtn" (round to nearest) or "gptq" (error compensation from the Hessian of each layer's
    inputs on `calib_batches`, per output channel), run block by block by the sequential driver of
    `sparseft.prune` (its "gptq" solver): each block's inputs come from the already-quantized blocks
    before it, as in GPTQ's reference code. GPTQ layers must lie inside the transformer blocks.
    """
    scheme = QuantScheme.parse(scheme) if isinstance(scheme, str) else scheme
    layers = find_prunable(model, targets, ignore)
    if not layers:
        raise ModelError(f"{type(model).__name__} has no Linear layer matching targets={targets} ignore={ignore}")
    if method not in WEIGHT_METHODS:
        raise ConfigError(f"method must be one of {', '.join(WEIGHT_METHODS)}, got {method!r}")
    if method == "gptq" and scheme.weights != "per_channel":
        raise ConfigError("gptq quantizes per output channel; use weights='per_channel'")
    needs_data = scheme.activations == "static" or method == "gptq"
    if needs_data and calib_batches is None:
        raise ConfigError("static activation scales and gptq need calibration batches (calib_batches)")
    batches = list(calib_batches) if needs_data else []
    input_scales = calibrate_input_scales(model, layers, batches) if scheme.activations == "static" else {}
    if method == "gptq":
        scales = _gptq_weights(model, layers, masks, batches)
    else:
        scales = _round_weights(layers, scheme.weights, masks)
    fq = FakeQuantizer(scheme)
    for name in layers:
        fq.layers[name] = LayerQuant(scales[name], scheme.activations, input_scales.get(name))
    return fq.attach(model)
