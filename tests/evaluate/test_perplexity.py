"""Perplexity against a token-by-token computation: back-to-back windows, sliding windows, BOS."""

import math

import pytest
import torch
import torch.nn.functional as F

from sparseft.errors import ConfigError
from sparseft.evaluate.perplexity import perplexity_report, token_stream
from tiny_models import build_tiny_model, byte_tokenizer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs!"]


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("llama", vocab_size=260, hidden_size=32, intermediate_size=64, max_position_embeddings=256)


def _nll(model, context: list[int], target: int) -> float:
    """-log p(target | context), one forward per token: no windows, padding or batching involved."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context])).logits[0, -1].double()
    return -float(F.log_softmax(logits, -1)[target])


def test_back_to_back_windows_score_every_token_but_each_windows_first(model):
    tok = byte_tokenizer()
    ids = token_stream(tok, TEXTS).tolist()
    seqlen = 16
    nll, n = 0.0, 0
    for start in range(0, len(ids) - 1, seqlen):
        window = ids[start : start + seqlen]
        for t in range(1, len(window)):
            nll, n = nll + _nll(model, window[:t], window[t]), n + 1
    result = perplexity_report(model, tok, TEXTS, seqlen=seqlen, batch_size=3)
    assert result.tokens == n and result.tokens == len(ids) - math.ceil((len(ids) - 1) / seqlen)
    assert result.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_sliding_windows_score_each_token_once_with_context(model):
    tok = byte_tokenizer()
    ids = token_stream(tok, TEXTS).tolist()
    seqlen, stride = 24, 8
    nll = 0.0
    for t in range(1, len(ids)):
        # token t is scored by the window that ends at the first stride boundary after it, which reaches
        # back seqlen tokens: between seqlen - stride and seqlen - 1 tokens of context
        end = min(-(-(t + 1) // stride) * stride, len(ids))
        nll += _nll(model, ids[max(0, end - seqlen) : t], ids[t])
    result = perplexity_report(model, tok, TEXTS, seqlen=seqlen, stride=stride)
    assert result.tokens == len(ids) - 1
    assert result.perplexity == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-5)
    whole = perplexity_report(model, tok, TEXTS, seqlen=len(ids), stride=len(ids))
    assert whole.perplexity == pytest.approx(perplexity_report(model, tok, TEXTS, seqlen=len(ids)).perplexity)


def test_windows_start_with_bos_when_the_tokenizer_adds_it(model):
    tok = byte_tokenizer(bos=True)
    ids = token_stream(tok, TEXTS).tolist()
    bos = tok.bos_token_id
    seqlen = 16
    nll, n = 0.0, 0
    for start in range(0, len(ids), seqlen - 1):
        window = [bos] + ids[start : start + seqlen - 1]
        for t in range(1, len(window)):  # the first real token is predicted from BOS
            nll, n = nll + _nll(model, window[:t], window[t]), n + 1
    result = perplexity_report(model, tok, TEXTS, seqlen=seqlen)
    assert result.tokens == n == len(ids)
    assert result.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_nothing_to_predict_is_a_clear_error(model):
    with pytest.raises(ConfigError, match="fewer than 2 tokens"):
        perplexity_report(model, byte_tokenizer(), [""], seqlen=8)
    with pytest.raises(ConfigError, match="seqlen"):
        perplexity_report(model, byte_tokenizer(), TEXTS, seqlen=1)
