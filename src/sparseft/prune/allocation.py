"""Non-uniform sparsity across blocks: OWL, outlier-weighted layerwise sparsity (Yin et al., 2024).

Uniform 70% is what breaks small models: blocks whose weights meet large activations ("outliers") lose
far more when pruned. OWL measures, per block, the fraction of weights whose Wanda score |W_ij| ||x_j||
exceeds `threshold` times the block's mean score (the layerwise outlier distribution, LOD), then keeps more
weights where that fraction is high:

    keep_b = (1 - sparsity) + 2 * lam * (LOD_b - min LOD) / (max LOD - min LOD) - (its parameter-weighted mean)

so the model's overall sparsity stays `sparsity` exactly (blocks weighted by their prunable parameters) and
no block differs from it by more than 2 * lam (the paper: lam 0.08, threshold 5 for LLaMA).

    >>> ratios = block_outlier_ratios(model, batches, layers, InMemory(), threshold=5.0)   # dense stats pass
    >>> per_block = owl_sparsities(ratios, block_sizes, sparsity=0.7, lam=0.08)          # pure
    >>> oneshot(model, batches, sparsity=0.7, allocation=Allocation("owl"))               # both, then prune
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.models.walk import Block, weight_matrix
from sparseft.prune.capture import capture_stack_inputs, to_device
from sparseft.prune.residency import BlockResidency
from sparseft.prune.stats import InputStats
from sparseft.prune.wanda import wanda_scores

ALLOCATIONS = ("uniform", "owl")
MAX_BLOCK_SPARSITY = 0.99


@dataclass(frozen=True)
class Allocation:
    """How the target sparsity is spread over blocks: "uniform", or "owl" with its two knobs."""

    method: str = "uniform"
    lam: float = 0.08  # largest deviation of a block from the target is 2 * lam
    threshold: float = 5.0  # a score counts as an outlier above threshold x the block's mean score

    def __post_init__(self) -> None:
        if self.method not in ALLOCATIONS:
            raise ConfigError(f"allocation must be one of {ALLOCATIONS}, got {self.method!r}")
        if not 0 <= self.lam < 0.5 or self.threshold <= 0:
            raise ConfigError(f"OWL needs 0 <= lam < 0.5 and threshold > 0, got lam={self.lam}, threshold={self.threshold}")


def owl_sparsities(
    ratios: Mapping[str, float], sizes: Mapping[str, int], sparsity: float, lam: float
) -> dict[str, float]:
    """Per-block sparsity from outlier ratios; the `sizes`-weighted mean equals `sparsity`.

    >>> owl_sparsities({"b0": 0.01, "b1": 0.03}, {"b0": 10, "b1": 10}, 0.5, 0.08)
    {'b0': 0.58, 'b1': 0.42}
    """
    names = list(ratios)
    values = torch.tensor([ratios[n] for n in names], dtype=torch.float64)
    weights = torch.tensor([float(sizes[n]) for n in names], dtype=torch.float64)
    spread = values.max() - values.min()
    scaled = (values - values.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(values)
    keep = (1 - sparsity) + scaled - (scaled * weights).sum() / weights.sum()
    block = (1 - keep).clamp(0.0, MAX_BLOCK_SPARSITY)
    return {n: round(float(s), 6) for n, s in zip(names, block, strict=True)}


@torch.no_grad()
def block_outlier_ratios(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    blocks: Sequence[Block],
    by_block: Mapping[str, Mapping[str, nn.Module]],
    residency: BlockResidency,
    device: torch.device | None = None,
    threshold: float = 5.0,
) -> dict[str, float]:
    """LOD of every block with prunable layers, from a dense pass over the calibration `batches`.

    Each block sees the dense model's activations (nothing is pruned); `residency.release` hands each
    block back unchanged, so a streamed model is read, never written, by this pass.
    """
    ratios: dict[str, float] = {}
    for stack in dict.fromkeys(b.stack for b in blocks):
        stack_blocks = [b for b in blocks if b.stack == stack]
        with residency.capturing(blocks):
            inputs = capture_stack_inputs(model, stack_blocks, batches)
        for i, block in enumerate(stack_blocks):
            residency.enter(block, device)
            layers = by_block[block.name]
            stats = InputStats(layers, hessian_batches=0, norms=True, block=block.module)
            try:
                for h, call, real in zip(inputs.hidden, inputs.calls[i], inputs.masks, strict=True):
                    stats.begin_batch(real)
                    h.copy_(call.run(block.module, to_device(h, device), device))
                    stats.end_batch()
                if layers:
                    ratios[block.name] = _outlier_ratio(layers, stats, threshold)
            finally:
                stats.remove()
                residency.release(block)
    return ratios


def owl_layer_sparsities(
    model: nn.Module, batches: Sequence[Mapping[str, Any]], layers: Mapping[str, nn.Module], sparsity: float,
    allocation: Allocation,
) -> dict[str, float]:
    """Layer name -> OWL sparsity of its block, from a dense pass over `batches` (the model stays in memory).

    What GMP's "owl" scheme ramps each layer to; the layers must all lie inside the transformer blocks.
    """
    from sparseft.models.walk import find_blocks
    from sparseft.prune.datafree import owner_block
    from sparseft.prune.residency import InMemory

    blocks = find_blocks(model)
    owner = {name: owner_block(name, blocks) for name in layers}
    if None in owner.values():
        outside = [n for n, b in owner.items() if b is None]
        raise ConfigError(f"OWL allocates per transformer block; these layers are outside every block: {outside[:5]}")
    by_block = {b.name: {n: layers[n] for n in layers if owner[n] == b.name} for b in blocks}
    ratios = block_outlier_ratios(model, batches, blocks, by_block, InMemory(), threshold=allocation.threshold)
    per_block = allocate_blocks(ratios, by_block, sparsity, allocation.lam)
    return {name: per_block[owner[name]] for name in layers}


def allocate_blocks(ratios: Mapping[str, float], by_block: Mapping[str, Mapping[str, nn.Module]], sparsity: float,
                    lam: float) -> dict[str, float]:
    """`owl_sparsities` with each block weighted by the weights of its prunable layers."""
    sizes = {b: sum(weight_matrix(m).numel() for m in by_block[b].values()) for b in ratios}
    return owl_sparsities(ratios, sizes, sparsity, lam)


def _outlier_ratio(layers: Mapping[str, nn.Module], stats: InputStats, threshold: float) -> float:
    scores = torch.cat([wanda_scores(weight_matrix(m).detach(), stats.norms(n)).flatten() for n, m in layers.items()])
    return float((scores > threshold * scores.mean()).double().mean())
