"""Fraction of zero weights over a model's prunable layers, dense (nn.Linear/Conv1D) or compressed.

>>> weight_sparsity(load_model("runs/smollm2-70-int8"))     # a compressed checkpoint counts its nnz
0.7
"""

from __future__ import annotations

from torch import nn

from sparseft.models import find_prunable


def weight_sparsity(model: nn.Module) -> float:
    """Zeros / weights over the layers inside the transformer blocks (`find_prunable`'s default), dense
    or packed as SparseLinear. A packed head (`compress --head int8`: lm_head, Whisper's proj_out) sits
    outside the blocks and is not counted, so a compressed model reports its source's sparsity."""
    from sparseft.models.walk import find_block_stacks
    from sparseft.runtime import SparseLinear

    zeros = total = 0
    for module in find_prunable(model).values():
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    blocks = tuple(name + "." for name, _ in find_block_stacks(model))
    for name, module in model.named_modules():
        if isinstance(module, SparseLinear) and (not blocks or name.startswith(blocks)):
            cells = module.out_features * module.in_features
            zeros += cells - module.compressed().nnz
            total += cells
    return zeros / total if total else 0.0
