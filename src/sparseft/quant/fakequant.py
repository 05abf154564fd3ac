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
from transformers.pytorch_utils import Conv1D

from sparseft.errors import ConfigError, ModelError
from sparseft.models.hooks import run_with_hooks
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


def out_in_mask(module: nn.Module, mask: Tensor | None) -> Tensor | None:
    """A mask in `module.weight`'s layout as (out, in) (GPT-2's Conv1D stores its weight transposed)."""
    if mask is None:
        return None
    return mask.t() if isinstance(module, Conv1D) else mask


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


@torch.no_grad()
def collect_hessians(
    model: nn.Module, layers: Mapping[str, nn.Module], batches: Iterable[Mapping[str, Any]]
) -> dict[str, Tensor]:
    """H = 2/n sum x x^T of each layer's inputs over `model(**batch)` forwards (full-precision model)."""
    from sparseft.prune.sparsegpt import accumulate_hessian

    H = {n: torch.zeros(_in_size(m), _in_size(m), dtype=torch.float32, device=m.weight.device) for n, m in layers.items()}
    count = dict.fromkeys(layers, 0)

    def hook(name: str):
        def fn(module: nn.Module, args: tuple) -> None:
            count[name] = accumulate_hessian(H[name], count[name], args[0].detach().float())

        return fn

    run_with_hooks(model, {m: hook(n) for n, m in layers.items()}, batches, pre=True)
    return H


def _in_size(module: nn.Module) -> int:
    return weight_matrix(module).shape[1]


def _quantize_weights(
    layers: Mapping[str, nn.Module], granularity: str, masks, method: str, hessians: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Replace each layer's weight by its int8 grid values in place; return the scales."""
    from sparseft.quant.gptq import gptq_quantize

    scales = {}
    for name, module in layers.items():
        W = weight_matrix(module)
        mask = out_in_mask(module, None if masks is None else masks.get(name))
        if method == "gptq":
            res = gptq_quantize(W, hessians[name], mask=mask)
            W_new, scales[name] = res.weight, res.scale
        else:
            wq = quantize_weight(W, granularity, mask)
            W_new, scales[name] = wq.dequantize(), wq.scale.float()
        W.copy_(W_new.to(W.dtype))  # writes through Conv1D's transposed view too
    return scales


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

    `masks` (layer name -> keep-mask in `weight`'s layout, as `sparseft.prune` writes them) force pruned
    weights to zero; without masks, zeros stay zero anyway. Static activation scales need `calib_batches`
    and are measured before any weight changes (each layer sees full-precision inputs).
    `method`: "rtn" (round to nearest) or "gptq" (error compensation from the Hessian of each layer's
    inputs on `calib_batches`, per output channel; inputs come from the full-precision model, not
    sequentially from already-quantized layers).
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
    hessians = collect_hessians(model, layers, batches) if method == "gptq" else {}
    scales = _quantize_weights(layers, scheme.weights, masks, method, hessians)
    hessians.clear()
    fq = FakeQuantizer(scheme)
    for name in layers:
        fq.layers[name] = LayerQuant(scales[name], scheme.activations, input_scales.get(name))
    return fq.attach(model)
