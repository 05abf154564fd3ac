"""Logit distillation: KL(softmax(z_t / T) || softmax(z_s / T)) * T^2, averaged over label positions.

For a causal LM the logits at position i predict the token at i + 1, so logits[:, :-1] pair with
labels[:, 1:] (`shift=True`, as the model's own CE does); seq2seq decoders predict labels in place
(`shift=False`). Positions whose label is `ignore_index` (padding, prompt) are left out. The T^2 factor
keeps the gradient scale independent of T (Hinton et al., 2015). Computed in fp32.

>>> loss = kd_loss(student.logits, teacher.logits, labels, temperature=2.0)
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def _label_positions(logits: Tensor, labels: Tensor | None, shift: bool, ignore_index: int) -> Tensor:
    """(N, vocab) logits at the positions that predict a real label."""
    if shift:
        logits = logits[:, :-1]
        labels = labels[:, 1:] if labels is not None else None
    flat = logits.reshape(-1, logits.shape[-1])
    if labels is None:
        return flat
    return flat[labels.reshape(-1) != ignore_index]


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    temperature: float = 1.0,
    shift: bool = True,
    ignore_index: int = -100,
) -> Tensor:
    """Mean over label positions of T^2 * KL(teacher || student) at temperature T (0 when none)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}")
    z_s = _label_positions(student_logits, labels, shift, ignore_index).float() / temperature
    z_t = _label_positions(teacher_logits, labels, shift, ignore_index).float() / temperature
    if z_s.shape[0] == 0:
        return student_logits.sum() * 0.0  # keeps the graph so backward still works
    log_p_s = torch.log_softmax(z_s, dim=-1)
    log_p_t = torch.log_softmax(z_t, dim=-1)
    # sum_v p_t (log p_t - log p_s) per position, then mean over positions.
    per_position = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)
    return per_position.mean() * temperature**2


def task_loss(logits: Tensor, labels: Tensor, shift: bool = True, ignore_index: int = -100) -> Tensor:
    """Plain token CE (what HF models compute from `labels`), for models that return no loss."""
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=ignore_index)
