"""Wanda (Sun et al., 2023): prune the weights with the smallest |W_ij| * ||x_j||, row by row.

Pure functions on tensors; the driver feeds the input norms it collects with hooks.

    >>> import torch
    >>> W, X = torch.randn(8, 16), torch.randn(100, 16)     # X: (tokens, in_features)
    >>> norm_sq = torch.zeros(16); n = accumulate_norms(norm_sq, 0, X)
    >>> mask = wanda_mask(W, norm_sq, 0.5)                  # True = keep
    >>> mask.sum(dim=1).tolist() == [8] * 8                 # every row keeps exactly half
    True
    >>> wanda_mask(W, norm_sq, 0.0, nm=(2, 4)).view(8, 4, 4).sum(-1).unique().tolist()
    [2]
"""

from __future__ import annotations

import torch
from torch import Tensor

from sparseft.prune.sparsegpt import check_settings, pruned_in_span


def accumulate_norms(norm_sq: Tensor, nsamples: int, x: Tensor) -> int:
    """Add inputs `x` (..., in_features) into the running mean of x_j^2 in place; return the token count.

    The mean (not the sum) keeps the scale stable; Wanda's ranking within a row ignores the scale.
    """
    x = x.reshape(-1, x.shape[-1]).to(norm_sq.dtype)
    tokens = x.shape[0]
    if tokens == 0:
        return nsamples
    norm_sq.mul_(nsamples / (nsamples + tokens))
    nsamples += tokens
    norm_sq.add_((x * x).sum(dim=0), alpha=1 / nsamples)
    return nsamples


def wanda_scores(W: Tensor, norm_sq: Tensor) -> Tensor:
    """|W_ij| * ||x_j|| in fp32, from the squared input norms (or diag(H), proportional to them)."""
    return W.abs().float() * norm_sq.float().clamp_min(0).sqrt().unsqueeze(0)


def wanda_mask(W: Tensor, norm_sq: Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> Tensor:
    """Keep-mask (True = keep) of Wanda: each output row drops its round(sparsity * in) lowest scores.

    With `nm=(N, M)` every group of M consecutive inputs in a row keeps its N highest scores instead.
    """
    check_settings(sparsity, nm, W.shape[1])
    return select_mask(wanda_scores(W, norm_sq), sparsity, nm)


def select_mask(score: Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> Tensor:
    """Per-row selection shared by score-based methods: drop the lowest scores of each row (or N:M group)."""
    rows, columns = score.shape
    mask = torch.ones_like(score, dtype=torch.bool)
    if nm is not None:
        n, m = nm
        groups = score.reshape(rows, columns // m, m)
        idx = torch.topk(groups, m - n, dim=2, largest=False).indices
        return mask.reshape(rows, columns // m, m).scatter_(2, idx, False).reshape(rows, columns)
    k = pruned_in_span(sparsity, 0, columns)
    if k:
        mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, False)
    return mask
