"""Cached token suppression: the scores and tokens of HF's SuppressTokens / SuppressTokensAtBegin processors."""

import pytest
import torch
from transformers.generation.logits_process import (
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

from seq2seq_helpers import tiny_whisper
from sparseft.runtime.suppression import CachedSuppression, use_cached_suppression


@pytest.mark.parametrize("length", [2, 3, 7])
def test_scores_equal_hf_processors_at_and_after_the_begin_index(length):
    always, begin, vocab = [3, 17, 40, 99], [5, 17, 63], 100
    scores = torch.randn(2, vocab)
    ids = torch.zeros(2, length, dtype=torch.long)
    want = SuppressTokensAtBeginLogitsProcessor(begin, begin_index=3)(ids, SuppressTokensLogitsProcessor(always)(ids, scores))
    cached = CachedSuppression(always, begin, vocab)
    cached.set_begin_index(3)
    got = cached(ids, scores)
    assert torch.equal(got, want)
    assert bool(torch.isinf(got[:, 63]).all()) == (length == 3)  # begin tokens only at the first position


def test_without_set_begin_index_the_first_call_is_the_begin():
    cached = CachedSuppression([], [4], 10)
    scores = torch.zeros(1, 10)
    assert torch.isinf(cached(torch.zeros(1, 5, dtype=torch.long), scores)[0, 4])
    assert not torch.isinf(cached(torch.zeros(1, 6, dtype=torch.long), scores)[0, 4])


def _features(model):
    torch.manual_seed(1)
    return torch.randn(1, model.config.num_mel_bins, 2 * model.config.max_source_positions)


def test_whisper_generates_the_tokens_of_hf_suppression(tmp_path):
    model = tiny_whisper(tmp_path / "w")
    features = _features(model)
    kwargs = {"max_new_tokens": 8, "do_sample": False}
    free = model.generate(features, **kwargs)
    # suppress tokens the unsuppressed model generates, so that suppression changes the output
    model.generation_config.suppress_tokens = [int(free[0, 2])]
    model.generation_config.begin_suppress_tokens = [int(free[0, 1])]
    want = model.generate(features, **kwargs)
    assert not torch.equal(want, free)
    assert use_cached_suppression(model)
    calls = []
    original_isin = torch.isin
    torch.isin = lambda *a, **k: calls.append(a[0].numel()) or original_isin(*a, **k)
    try:
        got = model.generate(features, **kwargs)
    finally:
        torch.isin = original_isin
    assert torch.equal(got, want)
    assert max(calls, default=0) < model.config.vocab_size  # HF's processors (isin over the vocabulary) are off
    assert model.generation_config.suppress_tokens == [int(free[0, 2])]  # a saved model keeps its lists


def test_transcription_applies_the_suppression_without_hf_processors(tmp_path):
    """`evaluate.transcribe` (sparseft eval, held-out curves) runs through `cached_suppression`: HF's tokens,
    and the model's lists are back afterwards."""
    from sparseft.runtime.suppression import cached_suppression

    model = tiny_whisper(tmp_path / "w")
    features = _features(model)
    kwargs = {"max_new_tokens": 8, "do_sample": False}
    free = model.generate(features, **kwargs)
    model.generation_config.suppress_tokens = [int(free[0, 3])]
    model.generation_config.begin_suppress_tokens = [int(free[0, 1])]
    want = model.generate(features, **kwargs)
    with cached_suppression(model) as processors:
        assert model.generation_config.suppress_tokens is None
        got = model.generate(features, logits_processor=processors, **kwargs)
    assert torch.equal(got, want) and not torch.equal(got, free)
    assert model.generation_config.suppress_tokens == [int(free[0, 3])]
