"""The one place that knows how a prunable layer lays out its weight: every other module sees (out, in).

`nn.Linear` stores its weight as (out_features, in_features); GPT-2's `Conv1D` stores it transposed,
(in, out), because it computes x @ W. Masks and weights cross every boundary of sparseft (mask files,
`apply_masks`, GMP, the solvers, fakequant, the runtime) as (out, in); only the code that touches the
parameter itself converts, through these helpers:

    >>> W = weight_matrix(layer)              # (out, in) view: writing into it writes into the layer
    >>> mask = W != 0                         # (out, in), like every mask sparseft returns or saves
    >>> grad_mask = param_layout(layer, mask) # laid out like `layer.weight` (a view), for gradient hooks
    >>> mask = as_out_in("h.0.attn.c_attn", layer, mask_from_an_old_file)  # checks the shape

Mask files written before this convention held Conv1D masks as (in, out); `as_out_in` still accepts
such a mask when the layer is not square (the shape says which layout it is). A square Conv1D's old
mask cannot be told apart from a new one and is read as (out, in): files are (out, in) from now on.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D


def is_transposed(module: nn.Module) -> bool:
    """True when `module.weight` is stored (in, out) (GPT-2's Conv1D), False for (out, in) (nn.Linear)."""
    return isinstance(module, Conv1D)


def weight_matrix(module: nn.Module) -> Tensor:
    """The layer's weight as an (out_features, in_features) view (Conv1D stores it transposed).

    Writing into the returned tensor writes into the layer.
    """
    if isinstance(module, Conv1D):
        return module.weight.t()
    if isinstance(module, nn.Linear):
        return module.weight
    raise TypeError(f"{type(module).__name__} is not a prunable layer (expected nn.Linear or Conv1D)")


def out_in_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of a Linear or Conv1D (works on meta-device layers too)."""
    rows, cols = module.weight.shape
    return (cols, rows) if is_transposed(module) else (rows, cols)


def param_layout(module: nn.Module, mask: Tensor) -> Tensor:
    """An (out, in) mask laid out like `module.weight`: a transposed view for Conv1D, else `mask` itself.

    A view, so a mask updated in place (GMP) updates the gradient hooks that hold its param-layout form.
    """
    return mask.t() if is_transposed(module) else mask


def as_out_in(name: str, module: nn.Module, mask: Tensor) -> Tensor:
    """`mask` checked to be (out, in) for `module`; an old (in, out) Conv1D mask is transposed, with a warning.

    Raises ValueError naming the layer for any other shape.
    """
    shape = out_in_shape(module)
    if tuple(mask.shape) == shape:
        return mask
    if is_transposed(module) and tuple(mask.shape) == shape[::-1]:
        warnings.warn(
            f"mask of {name} is laid out (in, out) like GPT-2's Conv1D weight (a mask file written before "
            "masks became (out, in)); transposing it. Re-save the masks to silence this.",
            stacklevel=3,
        )
        return mask.t()
    raise ValueError(f"mask of {name} has shape {tuple(mask.shape)}; the layer's (out, in) weight is {shape}")


@torch.no_grad()
def mask_weight_(module: nn.Module, mask: Tensor) -> None:
    """Zero the weights of `module` where the (out, in) `mask` is False, in place."""
    W = weight_matrix(module)
    W.mul_(mask.to(W.device, W.dtype))


def mask_for(masks: Mapping[str, Tensor] | None, name: str, module: nn.Module) -> Tensor | None:
    """The (out, in) mask of layer `name` in `masks` (checked by `as_out_in`), or None when it has none."""
    if masks is None or name not in masks:
        return None
    return as_out_in(name, module, masks[name])
