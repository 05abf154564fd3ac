"""Masks: which weights of each targeted layer are kept, applied so that pruned weights stay exactly zero.

A mask is a bool tensor shaped like the layer's `weight` parameter (True = kept). A `dict[str, Tensor]`
from layer name to mask is the whole pruning state; it is saved beside checkpoints as safetensors.

>>> masks = magnitude_prune(model, 0.5)
>>> enforcer = MaskEnforcer(model, masks)     # masks gradients and re-masks after each optimizer step
>>> enforcer.attach(optimizer)
>>> save_masks(masks, "run/masks.safetensors")
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparseft.errors import CheckpointError

Masks = dict[str, torch.Tensor]


def _modules(model: nn.Module, names) -> dict[str, nn.Module]:
    by_name = dict(model.named_modules())
    missing = [n for n in names if n not in by_name]
    if missing:
        raise KeyError(f"masks name layers the model does not have: {missing[:5]}")
    return {n: by_name[n] for n in names}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero every weight whose mask entry is False (in place)."""
    for name, module in _modules(model, masks).items():
        mask = masks[name]
        if mask.shape != module.weight.shape:
            raise ValueError(f"mask of {name} has shape {tuple(mask.shape)}, weight {tuple(module.weight.shape)}")
        module.weight.mul_(mask.to(module.weight.device, module.weight.dtype))


@torch.no_grad()
def masks_from_zeros(model: nn.Module, names) -> Masks:
    """Masks that keep every nonzero weight of the named layers (recovers masks of a pruned checkpoint)."""
    return {n: m.weight != 0 for n, m in _modules(model, names).items()}


class MaskEnforcer:
    """Keeps pruned weights exactly zero during training.

    Two mechanisms, both cheap: a gradient hook zeroes the gradient of pruned weights (so optimizer
    moments stay zero there and gradient clipping sees only live weights), and a post-step hook on the
    optimizer re-applies the masks (so weight decay or any optimizer quirk cannot revive a weight).
    FSDP2-sharded weights (DTensors) get their gradients by reduce-scatter, outside autograd, so for
    them the mask is applied by a post-accumulate-grad hook, which FSDP2 runs on each sharded gradient.
    """

    def __init__(self, model: nn.Module, masks: Masks):
        self.model = model
        self.masks = masks
        self._handles: list = []
        for name, module in _modules(model, masks).items():
            mask = masks[name].to(module.weight.device)
            masks[name] = mask
            if type(module.weight.data).__name__ == "DTensor":  # sharded by FSDP2 (see sparseft.train.fsdp)
                hook = module.weight.register_post_accumulate_grad_hook(lambda p, m=mask: p.grad.mul_(m))
            else:
                hook = module.weight.register_hook(lambda g, m=mask: g * m.to(g.dtype))
            self._handles.append(hook)
        apply_masks(model, masks)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-apply masks after every `optimizer.step()`."""
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.reapply()))

    def reapply(self) -> None:
        apply_masks(self.model, self.masks)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def save_masks(masks: Masks, path: str | Path) -> None:
    """Write masks as safetensors (bool tensors), atomically: a temp file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".masks-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().to("cpu", torch.bool).contiguous() for k, v in masks.items()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_masks(path: str | Path) -> Masks:
    """Read masks written by `save_masks`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mask file not found: {path}")
    try:
        masks = load_file(str(path))
    except Exception as err:
        raise CheckpointError(f"mask file {path} is damaged or not safetensors: {err}") from err
    return {k: v.to(torch.bool) for k, v in masks.items()}


@dataclass
class LayerSparsity:
    name: str
    shape: tuple[int, ...]
    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass
class SparsityReport:
    """Zeros per layer and in total, measured on the weights themselves (not trusted from masks)."""

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {
            "total_sparsity": self.sparsity,
            "layers": {layer.name: layer.sparsity for layer in self.layers},
        }

    def format(self, max_rows: int | None = None) -> str:
        """A text table, one row per layer, then the total."""
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        width = max([len(r.name) for r in rows] + [5])
        lines = [f"{'layer':<{width}}  {'shape':>12}  {'sparsity':>8}"]
        lines += [f"{r.name:<{width}}  {'x'.join(map(str, r.shape)):>12}  {r.sparsity:>8.2%}" for r in rows]
        if max_rows is not None and len(self.layers) > max_rows:
            lines.append(f"... {len(self.layers) - max_rows} more layers")
        lines.append(f"{'total':<{width}}  {self.total:>12,}  {self.sparsity:>8.2%}")
        return "\n".join(lines)


@torch.no_grad()
def sparsity_report(model: nn.Module, names) -> SparsityReport:
    """Count exact zeros in the weights of the named layers (a mask dict or list of names)."""
    layers = []
    for name, module in _modules(model, list(names)).items():
        weight = module.weight
        zeros = int((weight == 0).sum())
        layers.append(LayerSparsity(name, tuple(weight.shape), zeros, weight.numel()))
    return SparsityReport(layers)
