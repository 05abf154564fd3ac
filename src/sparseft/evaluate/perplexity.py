"""Perplexity of a causal LM on held-out texts.

Texts are tokenized separately (EOS between them), concatenated, and cut into windows of `seqlen`
tokens, each starting with BOS where the tokenizer adds one by default; perplexity = exp(mean
next-token NLL over every predicted token). `stride` scores each token once with up to `seqlen` tokens
of context (sliding windows) instead of back-to-back windows.

>>> perplexity(model, tokenizer, [p.text for p in gsm_problems()])
14.2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from sparseft.errors import ConfigError


def token_stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """All texts as one 1-D token tensor, separated by the EOS token."""
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + sep
    return torch.tensor(ids, dtype=torch.long)


@dataclass(frozen=True)
class PerplexityResult:
    """exp(mean NLL) over `tokens` predicted tokens, in `windows` model calls."""

    perplexity: float
    tokens: int
    windows: int


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] when the tokenizer adds it by default (Gemma, Llama 2), else []: each window then starts
    the way the model saw text in training (Gemma-3 scores ~3x worse without it)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a")["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def _windows(ids: torch.Tensor, seqlen: int, stride: int | None, prefix: list[int]) -> list[tuple[torch.Tensor, int]]:
    """(window ids, number of scored tokens at its end). Without `stride`: back-to-back windows, every
    token but a window's first scored once. With `stride`: each window ends `stride` tokens after the
    previous one and scores only those new tokens, with up to `seqlen` tokens of context before them."""
    head = torch.tensor(prefix, dtype=torch.long)
    room = seqlen - len(prefix)
    out = []
    if stride is None:
        for i in range(0, len(ids) - (0 if prefix else 1), room):
            w = ids[i : i + room]
            scored = len(w) if prefix else len(w) - 1
            if scored > 0:
                out.append((torch.cat([head, w]), scored))
        return out
    end = 0
    while end < len(ids):
        new_end = min(end + stride, len(ids))
        start = max(0, new_end - room)
        w = ids[start:new_end]
        scored = min(new_end - end, len(w) - (0 if prefix else 1))
        if scored > 0:
            out.append((torch.cat([head, w]), scored))
        end = new_end
    return out


@torch.no_grad()
def perplexity_report(
    model,
    tokenizer,
    texts: Sequence[str],
    seqlen: int = 512,
    batch_size: int = 4,
    progress: bool = False,
    stride: int | None = None,
) -> PerplexityResult:
    """Perplexity of `model` on `texts` in windows of `seqlen` tokens (see `_windows` for `stride`)."""
    if seqlen < 2:
        raise ConfigError(f"seqlen must be >= 2 tokens, got {seqlen}")
    if stride is not None and not 0 < stride <= seqlen:
        raise ConfigError(f"stride must be in [1, seqlen={seqlen}], got {stride}")
    windows = _windows(token_stream(tokenizer, texts), seqlen, stride, bos_prefix(tokenizer))
    total_nll, total_tokens = 0.0, 0
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(windows), batch_size), desc="perplexity", disable=not progress):
        nll, tokens = _batch_nll(model, windows[start : start + batch_size], device)
        total_nll, total_tokens = total_nll + nll, total_tokens + tokens
    if total_tokens == 0:
        raise ConfigError("the evaluation texts hold fewer than 2 tokens: nothing to predict")
    return PerplexityResult(math.exp(total_nll / total_tokens), total_tokens, len(windows))


def _batch_nll(model, batch: list[tuple[torch.Tensor, int]], device) -> tuple[float, int]:
    width = max(len(w) for w, _ in batch)
    input_ids = torch.zeros(len(batch), width, dtype=torch.long)
    attention = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (w, scored) in enumerate(batch):
        input_ids[row, : len(w)], attention[row, : len(w)] = w, 1
        labels[row, len(w) - scored : len(w)] = w[len(w) - scored :]
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
    targets = labels[:, 1:].to(device)  # position t predicts token t + 1
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    return float(nll), int((targets != -100).sum())


def perplexity(model, tokenizer, texts: Sequence[str], seqlen: int = 512, batch_size: int = 4,
               progress: bool = False, stride: int | None = None) -> float:
    """exp(mean NLL) of `model` on `texts`, in windows of `seqlen` tokens (last partial window kept)."""
    return perplexity_report(model, tokenizer, texts, seqlen, batch_size, progress, stride).perplexity
