"""Cached token suppression: the scores and tokens of HF's SuppressTokens / SuppressTokensAtBegin processors."""

from contextlib import contextmanager

import pytest
import torch
from transformers.generation.logits_process import (
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

from seq2seq_helpers import SPEECH_TEXTS, tiny_whisper, write_clips
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


def _suppress_what_it_generates(model, features, kwargs):
    """Set suppress lists to tokens the unsuppressed model generates (the first one at the begin index),
    so that suppression changes the output; returns (unsuppressed, HF-suppressed) ids."""
    free = model.generate(input_features=features, **kwargs)
    model.generation_config.suppress_tokens = [int(free[0, 2])]
    model.generation_config.begin_suppress_tokens = [int(free[0, 1])]
    want = model.generate(input_features=features, **kwargs)
    assert not torch.equal(want, free)
    return free, want


@contextmanager
def _vocabulary_isin_calls():
    """Sizes of the first argument of every torch.isin call in the block."""
    calls, original = [], torch.isin
    torch.isin = lambda *a, **k: calls.append(a[0].numel()) or original(*a, **k)
    try:
        yield calls
    finally:
        torch.isin = original


def test_whisper_generates_the_tokens_of_hf_suppression(tmp_path):
    model = tiny_whisper(tmp_path / "w")
    features, kwargs = _features(model), {"max_new_tokens": 8, "do_sample": False}
    free, want = _suppress_what_it_generates(model, features, kwargs)
    assert use_cached_suppression(model)
    with _vocabulary_isin_calls() as calls:
        got = model.generate(input_features=features, **kwargs)
    assert torch.equal(got, want)
    assert max(calls, default=0) < model.config.vocab_size  # HF's processors (isin over the vocabulary) are off
    assert model.generation_config.suppress_tokens == [int(free[0, 2])]  # a saved model keeps its lists


def test_transcribe_gives_the_text_of_hf_suppression_without_its_processors(tmp_path):
    """`evaluate.transcribe` (sparseft eval, held-out WER curves) suppresses through `cached_suppression`."""
    from sparseft.data.examples import clip_features, speech_processing
    from sparseft.data.speech import load_clips
    from sparseft.evaluate.generation import decode_generated, transcribe, transcribe_options
    from sparseft.models import load_tokenizer

    model = tiny_whisper(tmp_path / "w")
    clips = load_clips(str(write_clips(tmp_path / "clips", SPEECH_TEXTS[:1], split="test")), "test")
    extractor, tokenizer = speech_processing(model.config, load_tokenizer(str(tmp_path / "w")))
    options = transcribe_options(model, 8)
    free, want = _suppress_what_it_generates(model, clip_features(extractor, clips), options)
    with _vocabulary_isin_calls() as calls:
        got = transcribe(model, extractor, tokenizer, clips, max_new_tokens=8)
    assert got == decode_generated(tokenizer, want)
    assert max(calls, default=0) < model.config.vocab_size
    assert model.generation_config.suppress_tokens == [int(free[0, 2])]  # the lists are back
