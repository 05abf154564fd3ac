"""bf16 attention over long query blocks (runtime/long_attention.py) vs float64 attention computed here,
with bool / float masks and grouped KV heads; short queries and a CPU without native bf16 take the
fallback unchanged; a prepared tiny Whisper encodes as before within bf16 rounding."""

import pytest
import torch

import sparseft.runtime.long_attention as la
from sparseft.runtime.fast_decode import prepare_for_decode
from tiny_models import build_tiny_model

needs_bf16 = pytest.mark.skipif(not la.bf16_matmul_is_fast(), reason="no AMX or AVX512-BF16 here")


def _reference(q, k, v, mask, scale):
    """softmax(q k^T scale + mask) v in float64, (batch, rows, heads, dim)."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(rep, 1), v.double().repeat_interleave(rep, 1)
    s = q.double() @ k.transpose(-1, -2) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    return (s.softmax(-1) @ v).transpose(1, 2)


def _inputs(rows=600, keys=600, heads=4, kv_heads=4, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, rows, dim, generator=g)
    k = torch.randn(2, kv_heads, keys, dim, generator=g)
    v = torch.randn(2, kv_heads, keys, dim, generator=g)
    return q, k, v


@needs_bf16
@pytest.mark.parametrize("mask_kind, kv_heads", [(None, 4), ("bool", 4), ("float", 2), ("causal", 1)])
def test_long_queries_match_float64_attention(mask_kind, kv_heads):
    q, k, v = _inputs(kv_heads=kv_heads)
    mask = None
    if mask_kind == "bool":  # every row keeps a random two thirds of the keys
        mask = torch.rand(2, 1, 600, 600, generator=torch.Generator().manual_seed(1)) > 0.33
        mask[..., 0] = True
    elif mask_kind == "float":  # padding: the last 100 keys of the second row masked out, broadcast over rows
        mask = torch.zeros(2, 1, 1, 600)
        mask[1, ..., 500:] = torch.finfo(torch.float32).min
    elif mask_kind == "causal":
        mask = torch.ones(600, 600, dtype=torch.bool).tril()[None, None].expand(2, 1, 600, 600)
    out, weights = la.long_attention(None, q, k, v, mask, scaling=0.2)
    ref = _reference(q, k, v, mask, 0.2)
    assert weights is None and out.dtype == torch.float32 and out.shape == ref.shape
    err = (out.double() - ref).abs().max()
    assert 1e-6 < err < 0.05, err  # bf16 rounding, and really the bf16 path (fp32 would be ~1e-6)


def test_short_queries_and_cpus_without_bf16_take_the_fallback(monkeypatch):
    calls = []

    def fallback(module, q, k, v, mask, **kw):
        calls.append(q.shape[-2])
        return torch.zeros(1), None

    q, k, v = _inputs(rows=la.LONG_QUERY - 1)
    la.long_attention(None, q, k, v, None, fallback=fallback, scaling=0.2)
    q, k, v = _inputs(rows=la.LONG_QUERY)
    la.long_attention(None, q, k, v, None, fallback=fallback, scaling=0.2, dropout=0.1)  # training-time dropout
    monkeypatch.setattr(la, "bf16_matmul_is_fast", lambda: False)
    la.long_attention(None, q, k, v, None, fallback=fallback, scaling=0.2)
    assert calls == [la.LONG_QUERY - 1, la.LONG_QUERY, la.LONG_QUERY]


@needs_bf16
def test_prepared_whisper_encodes_within_bf16_rounding():
    model = build_tiny_model("whisper", seed=0, max_source_positions=la.LONG_QUERY + 44)  # a long block of frames
    features = torch.randn(1, model.config.num_mel_bins, 2 * model.config.max_source_positions,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.model.encoder(features).last_hidden_state
        calls = []
        original = la.bf16_attention
        la.bf16_attention = lambda *a: calls.append(1) or original(*a)
        try:
            assert prepare_for_decode(model, compile=False, fuse=False, long_attention=True)["attention"]
            after = model.model.encoder(features).last_hidden_state
        finally:
            la.bf16_attention = original
    assert calls, "the encoder's self-attention did not take the bf16 path"
    err = (after - before).abs().max() / before.abs().max()
    assert 0 < err < 0.05, err
