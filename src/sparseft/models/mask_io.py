"""Mask files: a pruning state (layer name -> bool keep-mask) saved beside a checkpoint as safetensors.

Every mask is (out_features, in_features), whatever the layer stores (GPT-2's Conv1D keeps its weight
transposed; see `sparseft.models.layers`). Files written before that convention may hold (in, out)
Conv1D masks: the code that applies masks to a model (`sparseft.prune.apply_masks`, `MaskEnforcer`,
fakequant) still accepts them for non-square layers, with a warning.

    >>> save_masks(masks, "runs/pruned/masks.safetensors")
    >>> masks = load_masks("runs/pruned/masks.safetensors")   # {name: bool (out, in) tensor}
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sparseft.atomic import atomic_file
from sparseft.errors import CheckpointError

#: Layer name -> bool keep-mask (True = kept) of its (out, in) weight.
Masks = dict[str, torch.Tensor]


def save_masks(masks: Masks, path: str | Path) -> None:
    """Write masks as safetensors (bool tensors), atomically: a temp file renamed into place."""
    with atomic_file(path) as tmp:
        save_file({k: v.detach().to("cpu", torch.bool).contiguous() for k, v in masks.items()}, str(tmp))


def load_masks(path: str | Path) -> Masks:
    """Read masks written by `save_masks`; a missing or damaged file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mask file not found: {path}")
    try:
        masks = load_file(str(path))
    except Exception as err:
        raise CheckpointError(f"mask file {path} is damaged or not safetensors: {err}") from err
    return {k: v.to(torch.bool) for k, v in masks.items()}
