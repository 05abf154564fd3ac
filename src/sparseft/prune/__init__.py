"""Pruning: masks, magnitude and N:M pruning (data-free), and one-shot solvers (SparseGPT, Wanda).

>>> from sparseft.prune import magnitude_prune, oneshot, sparsity_report
>>> masks = magnitude_prune(model, 0.5)                  # uniform 50% per layer
>>> masks = magnitude_prune(model, 0.5, nm=(2, 4))       # 2:4
>>> report = oneshot(model, calib_batches, method="sparsegpt", sparsity=0.5)   # block by block
>>> model, stream = load_for_oneshot("runs/dense")          # weights stay on disk, one block loaded at a time
>>> report = oneshot_to_folder(model, "runs/pruned", calib_batches, stream=stream, sparsity=0.5)
>>> print(sparsity_report(model, masks).format())
"""

from sparseft.prune.driver import OneShotReport, oneshot
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
from sparseft.prune.sparsegpt import sparsegpt_prune
from sparseft.prune.streaming import load_for_oneshot, oneshot_to_folder
from sparseft.prune.wanda import wanda_mask

__all__ = [
    "MaskEnforcer",
    "OneShotReport",
    "oneshot",
    "oneshot_to_folder",
    "load_for_oneshot",
    "sparsegpt_prune",
    "wanda_mask",
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
