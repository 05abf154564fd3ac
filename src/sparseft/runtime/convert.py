"""Swap the masked Linear layers of a model for `SparseLinear`.

>>> model = AutoModelForCausalLM.from_pretrained("runs/smollm2-70")     # pruned: zeros in weights
>>> sparsify_model(model, fmt="bf16")                                    # in place, returns names
['model.layers.0.self_attn.q_proj', ...]
>>> model.generate(ids, max_new_tokens=20)                               # unchanged API

A quantized model (sparseft.quant) keeps its exact int8 values and scales, and W8A8 layers run with int8
activations, when each layer's `Int8Spec` is passed (`sparseft.quant.runtime_int8_specs` builds them):

>>> sparsify_model(model, "fp32", masks=masks, int8={"model.layers.0.mlp.up_proj": Int8Spec(s, "dynamic-int8")})
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.models.walk import is_prunable
from sparseft.runtime.formats import get_format
from sparseft.runtime.linear import SparseLinear, dense_weight


@dataclass(frozen=True)
class Int8Spec:
    """One quantized layer for the runtime: its int8 weight scales ((out,) / (out, 1) per channel, or one
    per tensor; kept exactly), activation mode ("none" = weight-only, "dynamic-int8", "static-int8")
    and the static input scale. ``fmt``: the value format, one with per-row scales (int8)."""

    scales: torch.Tensor
    act: str = "none"
    input_scale: float | None = None
    fmt: str = "int8"


def _is_linear(module: nn.Module) -> bool:
    return is_prunable(module)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def select_layers(
    model: nn.Module,
    masks: dict[str, torch.Tensor] | None = None,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
    min_sparsity: float = 0.0,
) -> list[str]:
    """Names of the Linear/Conv1D layers to convert: those in ``masks``, else those passing
    ``filter_fn``, else those whose weight has more than ``min_sparsity`` zeros (default: any zero)."""
    names = []
    for name, module in model.named_modules():
        if not _is_linear(module):
            continue
        if masks is not None:
            ok = name in masks
        elif filter_fn is not None:
            ok = filter_fn(name, module)
        else:
            w = dense_weight(module)
            ok = bool((w == 0).float().mean() > min_sparsity) if (w == 0).any() else False
        if ok:
            names.append(name)
    return names


@torch.no_grad()
def sparsify_model(
    model: nn.Module,
    fmt: str = "fp32",
    masks: dict[str, torch.Tensor] | None = None,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
    min_sparsity: float = 0.0,
    formats: dict[str, str] | None = None,
    index: str = "bitmask",
    int8: Mapping[str, Int8Spec] | None = None,
) -> list[str]:
    """Replace selected layers (see ``select_layers``) by SparseLinear in place; returns their names.

    ``masks`` maps a layer name to a bool keep-mask of its (out, in) weight; ``formats`` overrides
    ``fmt`` per layer; ``index`` is "bitmask", "delta" or "auto" (per layer, by density). ``int8``: layers
    of a quantized model, converted (even when dense) to int8 values on their own scales, with their
    activation mode. Layers tied to another parameter (e.g. an lm_head tied to the embeddings) are
    skipped so the tie is not broken."""
    tied = _tied_weight_ids(model)
    int8 = int8 or {}
    chosen = set(select_layers(model, masks, filter_fn, min_sparsity)) | set(int8)
    done = []
    for name, module in list(model.named_modules()):
        if name not in chosen or not _is_linear(module):
            continue
        if id(module.weight) in tied:
            if name in int8 or (masks is not None and name in masks):  # asked for by name: say why not
                warnings.warn(
                    f"sparsify_model: {name} shares its weight with another layer (tied embeddings) and is "
                    f"left unconverted; to convert it anyway, untie it: "
                    f"model.{name} = SparseLinear.from_dense(model.{name}, ...)",
                    stacklevel=2,
                )
            continue
        mask = None if masks is None else masks.get(name)
        spec = int8.get(name)
        if spec is not None:
            if not get_format(spec.fmt).has_scales:
                raise ConfigError(f"{name}: quantized layers need a format with scales, not {spec.fmt}")
            new = SparseLinear.from_dense(
                module, spec.fmt, mask, index, act=spec.act, scales=spec.scales, input_scale=spec.input_scale
            )
        else:
            new = SparseLinear.from_dense(module, (formats or {}).get(name, fmt), mask, index)
        _set_module(model, name, new)
        done.append(name)
    return done


def _tied_weight_ids(model: nn.Module) -> set[int]:
    """ids of parameters registered under more than one name."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}
