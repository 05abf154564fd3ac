"""Magnitude pruning: uniform per layer, global (one threshold), and N:M along the input dimension.

Masks are exact: a layer asked for sparsity s loses exactly round(s * numel) weights (ties broken by
position), and every N:M group of M consecutive inputs keeps exactly N weights.

>>> mask = magnitude_mask(W, 0.5)               # W is (out, in); True = kept
>>> mask = nm_mask(W, 2, 4)
>>> masks = magnitude_prune(model, 0.7, scheme="global", overrides={r"\\.mlp\\.down_proj": 0.5})
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from sparseft.errors import ConfigError, ModelError
from sparseft.models.walk import find_prunable, weight_matrix
from sparseft.prune.masks import Masks, apply_masks


def validate_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """Accept a fraction in [0, 1); anything else is a ConfigError naming the value."""
    if not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise ConfigError(f"{what} must be a fraction in [0, 1) (e.g. 0.5 for 50%), got {sparsity!r}")
    return float(sparsity)


def parse_nm(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """'2:4' -> (2, 4): keep N of every M consecutive weights along the input dimension."""
    if text is None or isinstance(text, tuple):
        n_m = text
    else:
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
        if not match:
            raise ConfigError(f"N:M must look like '2:4' (keep N of every M weights), got {text!r}")
        n_m = (int(match.group(1)), int(match.group(2)))
    if n_m is not None and not 0 < n_m[0] < n_m[1]:
        raise ConfigError(f"N:M needs 0 < N < M (e.g. 2:4), got {n_m[0]}:{n_m[1]}")
    return n_m


def _keep_largest(scores: torch.Tensor, n_pruned: int) -> torch.Tensor:
    """Bool mask over a flat score vector that drops exactly `n_pruned` smallest (stable on ties)."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    if n_pruned > 0:
        order = torch.argsort(scores, stable=True)
        mask[order[:n_pruned]] = False
    return mask


def magnitude_mask(W: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep-mask of (out, in) matrix W: the largest |w| at exactly `sparsity`, or N:M when `nm` is given."""
    if nm is not None:
        return nm_mask(W, *nm)
    validate_sparsity(sparsity)
    n_pruned = round(sparsity * W.numel())
    return _keep_largest(W.detach().abs().flatten().float(), n_pruned).view_as(W)


def nm_mask(W: torch.Tensor, n: int, m: int, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the N largest of every M consecutive inputs of each output row (scores default to |W|)."""
    parse_nm((n, m))
    rows, cols = W.shape
    if cols % m:
        raise ConfigError(f"N:M {n}:{m} needs the input dimension to be a multiple of {m}, got {cols}")
    scores = (W.detach().abs() if scores is None else scores).float().reshape(rows, cols // m, m)
    keep_idx = torch.topk(scores, n, dim=-1).indices
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, keep_idx, True)
    return mask.view(rows, cols)


def global_magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float) -> Masks:
    """One magnitude threshold across all layers; exactly round(sparsity * total) weights pruned."""
    validate_sparsity(sparsity)
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights.values()])
    keep = _keep_largest(flat, round(sparsity * flat.numel()))
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].view(w.shape)
        start += w.numel()
    return masks


def layer_sparsity(name: str, default: float, overrides: dict[str, float] | None) -> float:
    """The first override whose regex matches `name` (re.search), else `default`."""
    for pattern, value in (overrides or {}).items():
        if re.search(pattern, name):
            return validate_sparsity(value, f"sparsity override for /{pattern}/")
    return default


def magnitude_prune(
    model: nn.Module,
    sparsity: float,
    *,
    scheme: str = "uniform",
    nm: str | tuple[int, int] | None = None,
    overrides: dict[str, float] | None = None,
    targets: str | Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
) -> Masks:
    """Prune the model's targeted layers in place by magnitude; return their (out, in) masks.

    scheme: "uniform" (each layer at its own sparsity; `overrides` maps name regexes to sparsities) or
    "global" (one threshold across layers). `nm` ("2:4") overrides both.
    """
    sparsity = validate_sparsity(sparsity)
    nm = parse_nm(nm)
    if scheme not in ("uniform", "global"):
        raise ConfigError(f"scheme must be 'uniform' or 'global', got {scheme!r}")
    layers = find_prunable(model, targets, ignore)
    if not layers:
        raise ModelError(
            f"{type(model).__name__} has no prunable layer (nn.Linear or Conv1D inside transformer blocks"
            f"{', matching targets ' + str(targets) if targets else ''}); check --target/--ignore"
        )
    weights = {name: weight_matrix(module) for name, module in layers.items()}
    if scheme == "global" and nm is None:
        masks = global_magnitude_masks(weights, sparsity)
    else:
        masks = {name: magnitude_mask(w, layer_sparsity(name, sparsity, overrides), nm) for name, w in weights.items()}
    apply_masks(model, masks)
    return masks
