"""Solving without calibration data (magnitude pruning): every targeted layer, block by block.

The blocks are visited through the same `BlockResidency` as the sequential driver, so a streamed model
holds one block at a time here too; layers outside the blocks (e.g. `--target lm_head`) stay resident.

    >>> report = OneShotReport("magnitude", 0.5, None)
    >>> solve_without_data(model, get_solver("magnitude"), SolveSettings(0.5), find_prunable(model), report,
    ...                    InMemory())
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sparseft.errors import ModelError
from sparseft.models.walk import Block, find_blocks, weight_matrix
from sparseft.prune.report import LayerReport, OneShotReport
from sparseft.prune.residency import BlockResidency
from sparseft.prune.solvers import LayerProblem, Solver, SolveSettings


def owner_block(name: str, blocks: Sequence[Block]) -> str | None:
    """The name of the block that holds layer `name`, or None for a layer outside every block."""
    return next((b.name for b in blocks if name.startswith(b.name + ".")), None)


@torch.no_grad()
def solve_without_data(model: nn.Module, solver: Solver, settings: SolveSettings, layers: dict[str, nn.Module],
                       report: OneShotReport, residency: BlockResidency) -> None:
    """A data-free solver (magnitude) on every targeted layer, block by block (a streamed model holds one
    block at a time); layers outside the blocks (e.g. `--target lm_head`) are always resident."""
    if not layers:
        raise ModelError(
            f"{type(model).__name__} has no prunable layer (nn.Linear or Conv1D inside transformer blocks); "
            "check --target/--ignore"
        )
    blocks = find_blocks(model)
    owners = {name: owner_block(name, blocks) for name in layers}
    for block in blocks:
        # every block passes through, targeted or not: a streamed model writes each block as it leaves
        mine = [name for name in layers if owners[name] == block.name]
        residency.enter(block, None)
        masks = {name: _solve_alone(name, layers[name], solver, settings, report) for name in mine}
        report.masks.update(residency.leave(block, masks))
    for name in (n for n in layers if owners[n] is None):
        report.masks[name] = _solve_alone(name, layers[name], solver, settings, report)
    order = {name: i for i, name in enumerate(layers)}
    report.layers.sort(key=lambda r: order[r.name])


def _solve_alone(name: str, module: nn.Module, solver: Solver, settings: SolveSettings,
                 report: OneShotReport) -> Tensor:
    W = weight_matrix(module)
    solution = solver.solve(LayerProblem(W.detach().to(torch.float32)), settings)
    W.copy_(solution.W.to(W.device, W.dtype))
    report.layers.append(LayerReport(name, (W.shape[0], W.shape[1]), float((W == 0).float().mean()),
                                     float("nan"), float("nan"), 0.0, 0))
    return solution.mask.cpu()
