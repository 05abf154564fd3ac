"""Sparsity measured on the weights themselves (not trusted from masks): zeros per layer and in total.

>>> report = sparsity_report(model, masks)          # a mask dict or a list of layer names
>>> print(report.format(max_rows=5)); report.sparsity
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from sparseft.models.walk import is_prunable, modules_named, weight_matrix


@dataclass
class LayerSparsity:
    """Zeros of one layer's (out, in) weight."""

    name: str
    shape: tuple[int, ...]
    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass
class SparsityReport:
    """Zeros per layer and in total."""

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {
            "total_sparsity": self.sparsity,
            "layers": {layer.name: layer.sparsity for layer in self.layers},
        }

    def format(self, max_rows: int | None = None) -> str:
        """A text table, one row per layer, then the total."""
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        width = max([len(r.name) for r in rows] + [5])
        lines = [f"{'layer':<{width}}  {'shape':>12}  {'sparsity':>8}"]
        lines += [f"{r.name:<{width}}  {'x'.join(map(str, r.shape)):>12}  {r.sparsity:>8.2%}" for r in rows]
        if max_rows is not None and len(self.layers) > max_rows:
            lines.append(f"... {len(self.layers) - max_rows} more layers")
        lines.append(f"{'total':<{width}}  {self.total:>12,}  {self.sparsity:>8.2%}")
        return "\n".join(lines)


@torch.no_grad()
def sparsity_report(model: nn.Module, names: Iterable[str]) -> SparsityReport:
    """Count exact zeros in the weights of the named layers (a mask dict or list of names)."""
    layers = []
    for name, module in modules_named(model, names).items():
        W = weight_matrix(module) if is_prunable(module) else module.weight
        layers.append(LayerSparsity(name, tuple(W.shape), int((W == 0).sum()), W.numel()))
    return SparsityReport(layers)
