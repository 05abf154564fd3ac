"""Fraction of zero weights over a model's prunable layers, dense (nn.Linear/Conv1D) or compressed.

>>> weight_sparsity(load_model("runs/smollm2-70-int8"))     # a compressed checkpoint counts its nnz
0.7
"""

from __future__ import annotations

from torch import nn

from sparseft.models import find_prunable


def weight_sparsity(model: nn.Module) -> float:
    """Zeros / weights over the prunable dense layers plus every SparseLinear of `model`."""
    from sparseft.runtime import SparseLinear

    zeros = total = 0
    for module in find_prunable(model).values():
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    for module in model.modules():
        if isinstance(module, SparseLinear):
            cells = module.out_features * module.in_features
            zeros += cells - module.compressed().nnz
            total += cells
    return zeros / total if total else 0.0
