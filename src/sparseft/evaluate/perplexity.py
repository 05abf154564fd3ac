"""Perplexity of a causal LM on held-out texts.

Texts are tokenized separately (BOS-free, EOS between them), concatenated, and cut into windows of
`seqlen` tokens; perplexity = exp(mean next-token NLL over every predicted token).

>>> perplexity(model, tokenizer, [p.text for p in gsm_problems()])
14.2
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


@torch.no_grad()
def perplexity(
    model,
    tokenizer,
    texts: Sequence[str],
    seqlen: int = 512,
    batch_size: int = 4,
    progress: bool = False,
) -> float:
    """exp(mean NLL) of `model` on `texts`, in windows of `seqlen` tokens (last partial window kept)."""
    if seqlen < 2:
        raise ConfigError(f"seqlen must be >= 2 tokens, got {seqlen}")
    ids = token_stream(tokenizer, texts)
    windows = [ids[i : i + seqlen] for i in range(0, len(ids) - 1, seqlen)]
    windows = [w for w in windows if len(w) > 1]
    total_nll, total_tokens = 0.0, 0
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(windows), batch_size), desc="perplexity", disable=not progress):
        batch = windows[start : start + batch_size]
        width = max(len(w) for w in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        attention = torch.zeros(len(batch), width, dtype=torch.long)
        for row, w in enumerate(batch):
            input_ids[row, : len(w)], attention[row, : len(w)] = w, 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
        labels = input_ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100).to(device)
        nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        total_nll += float(nll)
        total_tokens += int((labels != -100).sum())
    if total_tokens == 0:
        raise ConfigError("the evaluation texts hold fewer than 2 tokens: nothing to predict")
    return math.exp(total_nll / total_tokens)
