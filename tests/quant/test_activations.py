"""Int8 activations: per-token error bound, tokens independent, static scales from an observer, clipping."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseft.quant import AbsMaxObserver, fake_quantize_per_token, fake_quantize_static, quantize_per_token


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), tokens=st.integers(1, 9), dim=st.integers(1, 80))
def test_per_token_error_at_most_half_a_step(seed, tokens, dim):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, tokens, dim, generator=g, dtype=torch.float64) * torch.exp(3 * torch.randn(2, tokens, 1, generator=g, dtype=torch.float64))
    q, scale = quantize_per_token(x)
    assert q.dtype == torch.int8 and scale.shape == (2, tokens, 1)
    torch.testing.assert_close(scale, x.abs().amax(-1, keepdim=True) / 127, rtol=0, atol=0)
    assert bool(((x - q.double() * scale).abs() <= scale / 2 * (1 + 1e-12)).all())
    assert bool((q.abs().amax(-1) == 127).all())  # each token uses the whole grid


def test_one_outlier_token_does_not_change_the_others():
    x = torch.randn(4, 32)
    loud = x.clone()
    loud[2] *= 1000
    assert torch.equal(fake_quantize_per_token(x)[[0, 1, 3]], fake_quantize_per_token(loud)[[0, 1, 3]])


def test_zero_token_stays_zero_and_dtype_kept():
    x = torch.zeros(3, 8, dtype=torch.bfloat16)
    x[1] = 1
    out = fake_quantize_per_token(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out, x)


def test_static_scale_from_observer_clips_beyond_calibration():
    obs = AbsMaxObserver()
    for batch in (torch.tensor([0.5, -1.0]), torch.tensor([[2.54, 0.0]])):
        obs.observe(batch)
    assert obs.count == 2
    torch.testing.assert_close(obs.scale(), torch.tensor(0.02))
    out = fake_quantize_static(torch.tensor([0.031, -9.0, 1.0]), obs.scale())
    torch.testing.assert_close(out, torch.tensor([0.04, -2.54, 1.0]))  # 0.031 -> 2 steps; -9 clipped
    assert float(AbsMaxObserver().scale()) == 1.0
