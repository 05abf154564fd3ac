"""Calibration data for one-shot pruning: N windows of L tokens sampled from a text corpus.

Sources: "gsm" (generated variants of the packaged GSM math problems, never the 100 originals, which
stay held out for evaluation), "fortunes" (Debian package), or text files (.txt read whole, .jsonl with
a "text" field per line).

    >>> tok = load_tokenizer("smollm2-135m")
    >>> batches = calibration_batches(tok, calibration_texts("gsm"), nsamples=128, seqlen=512)
    >>> batches[0]["input_ids"].shape                     # batch_size windows per batch
    torch.Size([8, 512])
    >>> report = oneshot(model, batches)                  # sparseft.prune.driver
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sparseft.errors import ConfigError, SparseftError
from sparseft.evaluate.perplexity import token_stream

log = logging.getLogger(__name__)

#: Some GSM templates enumerate huge value spaces (over a minute per problem); each gets this budget.
TEMPLATE_SECONDS = 1.0


def calibration_texts(source: str | Sequence[str], gsm_count: int = 600, seed: int = 0) -> list[str]:
    """Texts of a named source ("gsm", "fortunes") or of the given files (.txt whole, .jsonl "text")."""
    sources = [source] if isinstance(source, str) else list(source)
    texts: list[str] = []
    for item in sources:
        if item == "gsm":
            texts += gsm_variant_texts(gsm_count, seed)
        elif item == "fortunes":
            from sparseft.data.texts import fortunes

            texts += fortunes()
        else:
            texts += _file_texts(Path(item))
    if not texts:
        raise ConfigError(f"calibration source {source!r} holds no text")
    return texts


def _file_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"calibration source '{path}' is neither 'gsm', 'fortunes' nor an existing file")
    content = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".jsonl":
        return [content]
    texts = []
    for number, line in enumerate(content.splitlines(), 1):
        if line.strip():
            try:
                texts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ConfigError(f"{path}:{number}: expected a JSON object with a 'text' field ({err})") from err
    return texts


def gsm_variant_texts(n: int, seed: int = 0, lang: str = "eng") -> list[str]:
    """`n` generated GSM problems with worked answers ("Question: ...\\nAnswer: ..."), cached on disk.

    Spread over the templates, skipping the slow ones, and never an original (held-out) question.
    """
    from sparseft.data.texts import gsm_variants

    texts = [p.text for p in gsm_variants(n, seed, lang, seconds_per_template=TEMPLATE_SECONDS)]
    if not texts:
        raise SparseftError("no GSM variant could be generated; use --calib fortunes or a text file")
    return texts


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
