"""Pruning: masks, magnitude and N:M pruning (data-free), and one-shot solvers (SparseGPT, Wanda).

>>> from sparseft.prune import magnitude_prune, sparsity_report
>>> masks = magnitude_prune(model, 0.5)                  # uniform 50% per layer
>>> masks = magnitude_prune(model, 0.5, nm=(2, 4))       # 2:4
>>> print(sparsity_report(model, masks).format())
"""

from sparseft.prune.magnitude import (
    global_magnitude_masks,
    magnitude_mask,
    magnitude_prune,
    nm_mask,
    parse_nm,
    validate_sparsity,
)
from sparseft.prune.masks import (
    MaskEnforcer,
    apply_masks,
    load_masks,
    masks_from_zeros,
    save_masks,
    sparsity_report,
)

__all__ = [
    "MaskEnforcer",
    "apply_masks",
    "global_magnitude_masks",
    "load_masks",
    "magnitude_mask",
    "magnitude_prune",
    "masks_from_zeros",
    "nm_mask",
    "parse_nm",
    "save_masks",
    "sparsity_report",
    "validate_sparsity",
]
