"""SquareHead: per-layer normalized MSE between student and teacher hidden states (Kurtic et al., 2023).

For each chosen layer l, with h_s, h_t of shape (batch, tokens, hidden) and a padding mask (batch, tokens),
normalized per token (the default, `normalize="token"`):

    L_l  = mean_{real tokens i} [ mean_dims (h_s,i - h_t,i)^2  /  (mean_dims h_t,i^2 + eps) ]
    L_SH = sum_l L_l

or per layer (`normalize="layer"`): mean_{tokens, dims} (h_s - h_t)^2 / (mean_{tokens, dims} h_t^2 + eps).

Why per token: decoder LMs keep "massive activations" on attention-sink tokens. In SmolLM2-135M's middle
blocks the first token of a 128-token window holds 99.5% of the teacher's squared norm (layer 15: mean
square 1.0e6 vs a median token's 41), so a per-layer denominator makes the loss match that one token and
ignore the errors of all others. Per token, every token's relative error counts the same. Both forms are
invariant to scaling student and teacher by one constant, so every layer counts about equally whatever its
activation scale. Computed in fp32 whatever the dtype of the states (bf16 teachers would otherwise lose
the small differences that matter late in training).

>>> loss = squarehead_loss([s0, s1], [t0, t1], attention_mask)       # one mask for all layers
>>> loss = squarehead_layer_loss(h_s, h_t, mask=None)                 # every position counts
>>> loss = squarehead_layer_loss(h_s, h_t, normalize="layer")         # one denominator per layer
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

EPS = 1e-6
NORMALIZATIONS = ("token", "layer")


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of (batch, tokens) `values` over positions where `mask` is nonzero (all when mask is None)."""
    if mask is None:
        return values.mean()
    weights = mask.to(device=values.device, dtype=values.dtype)
    # clamp: a batch made only of padding gives 0 / 1 = 0 instead of NaN.
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def squarehead_layer_loss(
    h_s: Tensor, h_t: Tensor, mask: Tensor | None = None, eps: float = EPS, normalize: str = "token"
) -> Tensor:
    """Normalized MSE of one layer; `mask` (batch, tokens) marks real tokens (1) vs padding (0)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"SquareHead normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if h_s.shape != h_t.shape:
        raise ValueError(f"student state {tuple(h_s.shape)} and teacher state {tuple(h_t.shape)} differ in shape")
    if mask is not None and tuple(mask.shape) != tuple(h_s.shape[:-1]):
        raise ValueError(f"padding mask {tuple(mask.shape)} does not match states {tuple(h_s.shape[:-1])}")
    h_s, h_t = h_s.float(), h_t.float()
    # Means over the hidden dim first, then over real tokens: every real token has the same number of dims,
    # so this equals the mean over (real tokens x dims) and never materializes a broadcast mask.
    squared_error = (h_s - h_t).pow(2).mean(dim=-1)
    teacher_power = h_t.pow(2).mean(dim=-1)
    if normalize == "token":
        return _masked_mean(squared_error / (teacher_power + eps), mask)
    return _masked_mean(squared_error, mask) / (_masked_mean(teacher_power, mask) + eps)


def squarehead_loss(
    student_states: Sequence[Tensor],
    teacher_states: Sequence[Tensor],
    masks: Tensor | Sequence[Tensor | None] | None = None,
    eps: float = EPS,
    normalize: str = "token",
) -> Tensor:
    """Sum over layers of `squarehead_layer_loss`.

    `masks`: one (batch, tokens) mask for every layer, a list with one mask (or None) per layer (encoder
    and decoder layers of a seq2seq model have different padding), or None (no padding).
    """
    if len(student_states) != len(teacher_states):
        raise ValueError(f"{len(student_states)} student layers but {len(teacher_states)} teacher layers")
    if not student_states:
        raise ValueError("SquareHead needs at least one layer")
    if masks is None or isinstance(masks, Tensor):
        masks = [masks] * len(student_states)
    if len(masks) != len(student_states):
        raise ValueError(f"{len(masks)} padding masks for {len(student_states)} layers")
    losses = [squarehead_layer_loss(s, t, m, eps, normalize) for s, t, m in zip(student_states, teacher_states, masks, strict=True)]
    return torch.stack(losses).sum()
