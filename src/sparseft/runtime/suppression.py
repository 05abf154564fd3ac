"""Whisper's token suppression with its masks built once, instead of at every generated token.

HF's `SuppressTokensLogitsProcessor` and `SuppressTokensAtBeginLogitsProcessor` rebuild an `isin` of the
whole vocabulary against their token lists at every step (51864 entries for Whisper: ~0.9 ms each, ~2 ms
of a decoder step whose sparse kernels take a few ms; measured on an AMD EPYC Zen 5, 1 thread).
`CachedSuppression` applies the same two rules with two boolean masks made once; `use_cached_suppression`
makes every later `model.generate` call use it in place of HF's pair, and `cached_suppression` does
the same for one block of calls (evaluation); the lists leave the model's generation config only for the
duration, so a saved model keeps them.

    >>> use_cached_suppression(whisper)        # True: whisper.generate(...) now gives the same tokens, faster
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList


class CachedSuppression(LogitsProcessor):
    """Scores of `always` set to -inf at every step, and of `at_begin` too at the first generated position
    (``begin_index``: set by Whisper's generate through `set_begin_index`, else the first call's length),
    as HF's two suppress processors do."""

    def __init__(self, always: Sequence[int], at_begin: Sequence[int], vocab: int) -> None:
        self.always = self._mask(always, vocab)
        self.first = self.always | self._mask(at_begin, vocab)
        self.begin_index: int | None = None

    @staticmethod
    def _mask(tokens: Sequence[int], vocab: int) -> torch.Tensor:
        mask = torch.zeros(vocab, dtype=torch.bool)
        ids = torch.tensor([t for t in tokens if 0 <= t < vocab], dtype=torch.long)
        mask[ids] = True
        return mask

    def set_begin_index(self, begin_index: int) -> None:
        self.begin_index = begin_index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.begin_index is None:
            self.begin_index = input_ids.shape[-1]
        mask = self.first if input_ids.shape[-1] == self.begin_index else self.always
        if mask.numel() != scores.shape[-1]:  # scores wider than the config's vocabulary: pad the mask
            mask = torch.cat([mask, mask.new_zeros(scores.shape[-1] - mask.numel())])[: scores.shape[-1]]
        return scores.masked_fill(mask.to(scores.device), -float("inf"))


@contextmanager
def cached_suppression(model: nn.Module) -> Iterator[list[LogitsProcessor]]:
    """Within the block, the model's generation config has no suppress lists and the yielded processors
    (pass them as ``logits_processor`` to ``model.generate``) apply them; the lists are put back after,
    errors included. HF fills a passed config's None fields from ``model.generation_config``, which is
    why the lists leave the model's own config rather than a copy.

        >>> with cached_suppression(whisper) as processors:
        ...     ids = whisper.generate(input_features=features, logits_processor=processors)
    """
    own = getattr(model, "generation_config", None)
    lists = (own.suppress_tokens, own.begin_suppress_tokens) if own is not None else (None, None)
    if not (lists[0] or lists[1]):
        yield []
        return
    processor = CachedSuppression(lists[0] or [], lists[1] or [], model.config.vocab_size)
    own.suppress_tokens = own.begin_suppress_tokens = None
    try:
        yield [processor]
    finally:
        own.suppress_tokens, own.begin_suppress_tokens = lists


def use_cached_suppression(model: nn.Module) -> bool:
    """Make ``model.generate`` apply the generation config's ``suppress_tokens`` / ``begin_suppress_tokens``
    through `CachedSuppression` (a call that passes its own ``generation_config`` runs unchanged). Returns
    False when the model suppresses nothing (nothing to do)."""
    config = getattr(model, "generation_config", None)
    if config is None or not (config.suppress_tokens or config.begin_suppress_tokens):
        return False
    if getattr(model, "_sparseft_suppression", False):
        return True
    original = model.generate

    def generate(*args, generation_config=None, logits_processor=None, **kwargs):
        if generation_config is not None:
            return original(*args, generation_config=generation_config, logits_processor=logits_processor, **kwargs)
        with cached_suppression(model) as processors:
            return original(*args, logits_processor=LogitsProcessorList([*(logits_processor or []), *processors]),
                            **kwargs)

    object.__setattr__(model, "generate", generate)  # an instance attribute, not a submodule
    object.__setattr__(model, "_sparseft_suppression", True)
    return True
