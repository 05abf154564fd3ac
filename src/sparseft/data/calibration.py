"""Calibration data for one-shot pruning: N windows of L tokens sampled from a text corpus.

The texts come from `sparseft.data.sources.load_texts(source, "calibration")`, never from a test split.

    >>> tok = load_tokenizer("smollm2-135m")
    >>> batches = calibration_batches(tok, load_texts("gsm", "calibration"), nsamples=128, seqlen=512)
    >>> batches[0]["input_ids"].shape                     # batch_size windows per batch
    torch.Size([8, 512])
    >>> report = oneshot(model, batches)                  # sparseft.prune.driver
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from sparseft.errors import ConfigError
from sparseft.evaluate.perplexity import token_stream

log = logging.getLogger(__name__)


def calibration_batches(
    tokenizer: Any,
    texts: Sequence[str],
    nsamples: int = 128,
    seqlen: int = 512,
    batch_size: int = 8,
    seed: int = 0,
    encoder_decoder: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """`nsamples` random windows of `seqlen` tokens, grouped in batches of model inputs.

    Windows start at random offsets of the joined token stream (SparseGPT samples C4 the same way); with
    fewer tokens than nsamples * seqlen they overlap. `encoder_decoder` feeds each window to both the
    encoder and the decoder (T5-style text models).
    """
    if nsamples < 1 or seqlen < 1 or batch_size < 1:
        raise ConfigError(f"nsamples, seqlen and batch_size must be >= 1, got {nsamples}, {seqlen}, {batch_size}")
    stream = token_stream(tokenizer, texts)
    if len(stream) < seqlen:
        raise ConfigError(f"the calibration texts hold {len(stream)} tokens, fewer than one window of {seqlen}")
    if len(stream) < nsamples * seqlen:
        log.warning("calibration texts hold %d tokens < %d x %d: windows overlap", len(stream), nsamples, seqlen)
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seqlen + 1, (nsamples,), generator=gen)
    windows = torch.stack([stream[s : s + seqlen] for s in starts.tolist()])
    batches = []
    for chunk in windows.split(batch_size):
        batch = {"input_ids": chunk}  # no padding, so no attention mask: the model's causal default holds
        if encoder_decoder:
            batch["decoder_input_ids"] = chunk
        batches.append(batch)
    return batches
