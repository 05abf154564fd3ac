"""Pruning: masks, magnitude and N:M pruning (data-free), and one-shot solvers (SparseGPT, Wanda).

Every mask is a bool (out_features, in_features) tensor, for GPT-2's Conv1D too (`sparseft.models.layers`).
Layout of the package: `solvers.py` (the method registry) over pure solvers (`sparsegpt.py`, `wanda.py`,
`magnitude.py`); `driver.py` (sequential, block by block) with `capture.py`, `stats.py`, `residency.py`,
`report.py`; `streaming.py` (disk to disk); `masks.py` (apply, enforce) and `sparsity_report.py`.

>>> from sparseft.prune import magnitude_prune, oneshot, sparsity_report
>>> masks = magnitude_prune(model, 0.5)                  # uniform 50% per layer
>>> masks = magnitude_prune(model, 0.5, nm=(2, 4))       # 2:4
>>> report = oneshot(model, calib_batches, method="sparsegpt", sparsity=0.5)   # block by block
>>> model, stream = load_for_oneshot("runs/dense")          # weights stay on disk, one block loaded at a time
>>> report = oneshot_to_folder(model, "runs/pruned", calib_batches, stream=stream, sparsity=0.5)
>>> print(sparsity_report(model, masks).format())
"""

from sparseft.models.mask_io import Masks, load_masks, save_masks
from sparseft.prune.driver import OneShotReport, oneshot, solve_sequentially
from sparseft.prune.magnitude import (
    global_magnitude_masks,
    magnitude_mask,
    magnitude_prune,
    nm_mask,
    parse_nm,
    validate_sparsity,
)
from sparseft.prune.masks import MaskEnforcer, apply_masks, masks_from_zeros
from sparseft.prune.solvers import SOLVERS, LayerProblem, Needs, Solution, Solver, register_solver
from sparseft.prune.sparsegpt import sparsegpt_prune
from sparseft.prune.sparsity_report import sparsity_report
from sparseft.prune.streaming import load_for_oneshot, oneshot_to_folder
from sparseft.prune.wanda import wanda_mask

__all__ = [
    "SOLVERS",
    "LayerProblem",
    "MaskEnforcer",
    "Masks",
    "Needs",
    "Solution",
    "Solver",
    "register_solver",
    "solve_sequentially",
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


def __getattr__(name: str):
    # METHODS follows the solver registry (see sparseft.prune.solvers).
    if name == "METHODS":
        from sparseft.prune.solvers import method_names

        return method_names("prune")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
