"""What a sequential solve did: per-layer sparsity and output errors, the masks, and totals.

    >>> report = oneshot(model, batches, method="sparsegpt", sparsity=0.5)
    >>> print(report.format(max_rows=5)); report.as_dict()["total_sparsity"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from sparseft.models.mask_io import Masks


@dataclass
class LayerReport:
    """One pruned layer: measured sparsity and output error on the calibration inputs it saw.

    error = mean over tokens of ||(W - W') x||^2; rel_error divides it by the mean ||W x||^2; both are
    measured on `error_tokens` calibration tokens (NaN when none).
    """

    name: str
    shape: tuple[int, int]
    sparsity: float
    error: float
    rel_error: float
    seconds: float
    error_tokens: int = 0


@dataclass
class OneShotReport:
    """What `oneshot` (or the driver under GPTQ) did: per-layer reports, the (out, in) masks, and totals.

    A streamed run (`sparseft.prune.streaming`) writes the masks to disk as it goes: `masks` is then empty.
    `scales`: the int8 weight scales ((out, 1) per layer) of a quantizing solver (GPTQ); empty when pruning.
    """

    method: str
    sparsity: float
    nm: tuple[int, int] | None
    layers: list[LayerReport] = field(default_factory=list)
    masks: Masks = field(default_factory=dict)
    scales: dict[str, Tensor] = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0
    block_sparsity: dict[str, float] = field(default_factory=dict)  # non-uniform allocation (OWL); else empty
    outlier_ratios: dict[str, float] = field(default_factory=dict)  # OWL's LOD per block

    @property
    def total_sparsity(self) -> float:
        total = sum(r.shape[0] * r.shape[1] for r in self.layers)
        zeros = sum(r.sparsity * r.shape[0] * r.shape[1] for r in self.layers)
        return zeros / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "sparsity": self.sparsity,
            "nm": f"{self.nm[0]}:{self.nm[1]}" if self.nm else None,
            "total_sparsity": self.total_sparsity,
            "calibration_tokens": self.tokens,
            "seconds": self.seconds,
            "block_sparsity": self.block_sparsity,
            "outlier_ratios": self.outlier_ratios,
            "layers": [
                {"name": r.name, "shape": list(r.shape), "sparsity": r.sparsity, "error": r.error,
                 "rel_error": r.rel_error, "error_tokens": r.error_tokens, "seconds": r.seconds}
                for r in self.layers
            ],
        }

    def format(self, max_rows: int | None = None) -> str:
        """A text table: one row per layer (sparsity, error, relative error), then the total."""
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        width = max([len(r.name) for r in rows] + [5])
        lines = [f"{'layer':<{width}}  {'shape':>11}  {'sparsity':>8}  {'error':>10}  {'rel.err':>8}"]
        for r in rows:
            shape = "x".join(map(str, r.shape))
            lines.append(f"{r.name:<{width}}  {shape:>11}  {r.sparsity:>8.2%}  {r.error:>10.4g}  {r.rel_error:>8.2%}")
        if max_rows is not None and len(self.layers) > max_rows:
            lines.append(f"... {len(self.layers) - max_rows} more layers")
        lines.append(
            f"{'total':<{width}}  {len(self.layers):>5} lyrs  {self.total_sparsity:>8.2%}"
            f"  ({self.method}, {self.tokens:,} calibration tokens, {self.seconds:.1f} s)"
        )
        error_tokens = {r.error_tokens for r in self.layers}
        if error_tokens and max(error_tokens) < self.tokens:
            lines.append(f"errors measured on the first {max(error_tokens):,} calibration tokens")
        return "\n".join(lines)
