"""Masks: which weights of each targeted layer are kept, applied so that pruned weights stay exactly zero.

A mask is a bool tensor shaped like the layer's (out_features, in_features) weight matrix (True = kept),
for GPT-2's Conv1D too, whose parameter is stored transposed (`sparseft.models.layers`). A
`dict[str, Tensor]` from layer name to mask is the whole pruning state; it is saved beside checkpoints
as safetensors (`save_masks`/`load_masks`, which live in `sparseft.models.mask_io`).

>>> masks = magnitude_prune(model, 0.5)
>>> enforcer = MaskEnforcer(model, masks)     # masks gradients and re-masks after each optimizer step
>>> enforcer.attach(optimizer)
>>> save_masks(masks, "run/masks.safetensors")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from sparseft.models.layers import as_out_in, param_layout, weight_matrix
from sparseft.models.mask_io import Masks, load_masks, save_masks
from sparseft.models.walk import modules_named
from sparseft.prune.sparsity_report import LayerSparsity, SparsityReport, sparsity_report

__all__ = ["LayerSparsity", "MaskEnforcer", "Masks", "SparsityReport", "apply_masks", "load_masks",
           "masks_from_zeros", "save_masks", "sparsity_report"]

#: Lays a param-layout mask out like a (possibly sharded) weight: `(mask, weight) -> mask`.
Placement = Callable[[Tensor, Tensor], Tensor]


def _zero_pruned(weight: Tensor, param_mask: Tensor) -> None:
    weight.mul_(param_mask.to(weight.device, weight.dtype))


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero every weight whose (out, in) mask entry is False (in place)."""
    for name, module in modules_named(model, masks).items():
        _zero_pruned(module.weight, param_layout(module, as_out_in(name, module, masks[name])))


@torch.no_grad()
def masks_from_zeros(model: nn.Module, names: Iterable[str]) -> Masks:
    """(out, in) masks that keep every nonzero weight of the named layers (masks of a pruned checkpoint)."""
    return {n: weight_matrix(m) != 0 for n, m in modules_named(model, names).items()}


def _on_weight_device(mask: Tensor, weight: Tensor) -> Tensor:
    return mask.to(weight.device)


class MaskEnforcer:
    """Keeps pruned weights exactly zero during training.

    Two mechanisms, both cheap: a gradient hook zeroes the gradient of pruned weights (so optimizer
    moments stay zero there and gradient clipping sees only live weights), and a post-step hook on the
    optimizer re-applies the masks (so momentum from before a weight was pruned, as in GMP, or any
    optimizer quirk cannot revive it). FSDP2-sharded weights (DTensors) get their gradients by
    reduce-scatter, outside autograd, so for them the mask is applied by a post-accumulate-grad hook,
    which FSDP2 runs on each sharded gradient.

    `masks` are (out, in); `self.masks` holds them (on each weight's device) as the pruning state. The
    hooks work on the parameter's own layout, so each mask is laid out like its weight once, here:
    a transposed view for Conv1D, then `place` (default: to the weight's device; FSDP passes
    `sparseft.train.fsdp.shard_like` to shard it like the weight). Change a mask with `update`.
    """

    def __init__(self, model: nn.Module, masks: Masks, place: Placement | None = None):
        self.model = model
        self.masks = masks
        self._place = place or _on_weight_device
        self._modules = modules_named(model, masks)
        self._param_masks: dict[str, Tensor] = {}
        self._linked: dict[str, bool] = {}  # True: the param-layout mask is a view of self.masks[name]
        self._handles: list = []
        for name, module in self._modules.items():
            masks[name] = as_out_in(name, module, masks[name]).to(module.weight.device)
            self._lay_out(name)
            if module.weight.requires_grad:  # a frozen weight gets no gradient to mask
                self._handles.append(self._gradient_hook(module.weight, self._param_masks[name]))
        self.reapply()

    def _lay_out(self, name: str) -> None:
        module = self._modules[name]
        view = param_layout(module, self.masks[name])
        self._param_masks[name] = self._place(view, module.weight)
        self._linked[name] = self._param_masks[name] is view

    @staticmethod
    def _gradient_hook(weight: nn.Parameter, param_mask: Tensor):
        if type(weight.data).__name__ == "DTensor":  # sharded by FSDP2 (see sparseft.train.fsdp)
            return weight.register_post_accumulate_grad_hook(lambda p, m=param_mask: p.grad.mul_(m))
        return weight.register_hook(lambda g, m=param_mask: g * m.to(g.dtype))

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-apply masks after every `optimizer.step()`."""
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.reapply()))

    @torch.no_grad()
    def update(self, name: str, mask: Tensor) -> None:
        """Replace the (out, in) mask of layer `name` in place (the hooks hold these very tensors)."""
        self.masks[name].copy_(mask.to(self.masks[name].device))
        if not self._linked[name]:
            module = self._modules[name]
            self._param_masks[name].copy_(self._place(param_layout(module, self.masks[name]), module.weight))

    @torch.no_grad()
    def reapply(self) -> None:
        """Zero every pruned weight again (in the parameter's layout, sharded or not)."""
        for name, module in self._modules.items():
            _zero_pruned(module.weight, self._param_masks[name])

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
