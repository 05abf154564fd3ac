"""Gradual magnitude pruning (GMP): a cubic sparsity schedule and the magnitude masks it asks for.

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3      for t0 <= t <= t0 + n * dt

Sparsity rises fast while the network has redundancy and slowly near the end (Zhu & Gupta, 2017).
Masks change only every `frequency` (dt) steps, at t0, t0 + dt, ..., and stay fixed after t0 + n * dt.
Pruned weights are zero, so they rank lowest by magnitude and stay pruned: masks only ever grow sparser.

>>> schedule = GMPSchedule(0.0, 0.5, start_step=0, end_step=100, frequency=10)
>>> schedule.sparsity_at(0), schedule.sparsity_at(100)
(0.0, 0.5)
>>> new_masks = gmp_masks(layers, schedule.sparsity_at(step), scheme="global")

Scheme "owl" ramps every layer to its own final sparsity (OWL's per-block allocation, measured once on the
dense model before training: `sparseft.prune.allocation.owl_layer_sparsities`): `layer_share` holds each
layer's final sparsity over `final_sparsity`, and layer l gets s_t * share_l at step t.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.models.mask_io import Masks
from sparseft.models.walk import weight_matrix
from sparseft.prune.magnitude import global_magnitude_masks, magnitude_mask, validate_sparsity
from sparseft.train.fsdp import gather_full

SCHEMES = ("uniform", "global", "owl")
MAX_LAYER_SPARSITY = 0.99


@dataclass(frozen=True)
class GMPSchedule:
    """Cubic schedule from `initial_sparsity` at `start_step` to `final_sparsity` at `end_step`."""

    initial_sparsity: float
    final_sparsity: float
    start_step: int
    end_step: int
    frequency: int = 1
    scheme: str = "uniform"
    layer_share: Mapping[str, float] | None = None  # scheme "owl": layer -> its final sparsity / final_sparsity

    def __post_init__(self) -> None:
        validate_sparsity(self.initial_sparsity, "GMP initial sparsity")
        validate_sparsity(self.final_sparsity, "GMP final sparsity")
        if self.final_sparsity < self.initial_sparsity:
            raise ConfigError(f"GMP final sparsity {self.final_sparsity} is below initial {self.initial_sparsity}")
        if not 0 <= self.start_step <= self.end_step:
            raise ConfigError(f"GMP needs 0 <= start_step <= end_step, got {self.start_step}..{self.end_step}")
        if self.frequency < 1:
            raise ConfigError(f"GMP frequency must be >= 1 step, got {self.frequency}")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"GMP scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if (self.scheme == "owl") != (self.layer_share is not None):
            raise ConfigError("GMP scheme 'owl' needs layer_share (per-layer final sparsity), and only it takes one")

    def sparsity_at(self, step: int) -> float:
        """The cubic formula at `step`, clamped to the step range (s_i before it, s_f after it)."""
        span = self.end_step - self.start_step
        if span == 0:
            return self.final_sparsity if step >= self.start_step else self.initial_sparsity
        progress = min(max((step - self.start_step) / span, 0.0), 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** 3

    def last_update_step(self, step: int) -> int | None:
        """The most recent step <= `step` at which masks change (None before `start_step`)."""
        if step < self.start_step:
            return None
        if step >= self.end_step:
            return self.end_step
        return self.start_step + (step - self.start_step) // self.frequency * self.frequency

    def target_at(self, step: int) -> float | None:
        """Sparsity the masks should have after `step` (piecewise constant between updates)."""
        update = self.last_update_step(step)
        return None if update is None else self.sparsity_at(update)


@torch.no_grad()
def gmp_masks(layers: dict[str, nn.Module], sparsity: float, scheme: str = "uniform",
              layer_share: Mapping[str, float] | None = None) -> Masks:
    """(out, in) magnitude masks at `sparsity` for `layers` (name -> Linear/Conv1D); "owl" scales it per layer."""
    if scheme not in SCHEMES:
        raise ConfigError(f"GMP scheme must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "owl" and (layer_share is None or set(layers) - set(layer_share)):
        raise ConfigError("GMP scheme 'owl' needs a layer_share for every pruned layer")
    # Ranking needs whole matrices: gather the weights FSDP has sharded (a no-op otherwise).
    weights = {name: gather_full(weight_matrix(module)) for name, module in layers.items()}
    if scheme == "global":
        return global_magnitude_masks(weights, sparsity)
    if scheme == "owl":
        return {name: magnitude_mask(w, min(MAX_LAYER_SPARSITY, sparsity * layer_share[name]))
                for name, w in weights.items()}
    return {name: magnitude_mask(w, sparsity) for name, w in weights.items()}
