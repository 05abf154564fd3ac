"""SquareHead and logit KD against independent reference computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from sparseft.distill import kd_loss, squarehead_layer_loss, squarehead_loss


def _states(seed: int, shape=(3, 5, 8), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def _reference_layer(h_s, h_t, mask, eps):
    """Plain float64 loops over the real tokens: sum (s-t)^2 / n  over  sum t^2 / n."""
    h_s, h_t = h_s.double().numpy(), h_t.double().numpy()
    num = den = 0.0
    count = 0
    for b in range(h_s.shape[0]):
        for i in range(h_s.shape[1]):
            if mask is not None and not mask[b, i]:
                continue
            for d in range(h_s.shape[2]):
                num += (h_s[b, i, d] - h_t[b, i, d]) ** 2
                den += h_t[b, i, d] ** 2
                count += 1
    return (num / count) / (den / count + eps)


def _reference_token(h_s, h_t, mask, eps):
    """Plain float64 loops: per real token, sum (s-t)^2 / d over sum t^2 / d; then the mean over tokens."""
    h_s, h_t = h_s.double().numpy(), h_t.double().numpy()
    ratios = []
    for b in range(h_s.shape[0]):
        for i in range(h_s.shape[1]):
            if mask is not None and not mask[b, i]:
                continue
            d = h_s.shape[2]
            num = sum((h_s[b, i, k] - h_t[b, i, k]) ** 2 for k in range(d)) / d
            den = sum(h_t[b, i, k] ** 2 for k in range(d)) / d
            ratios.append(num / (den + eps))
    return sum(ratios) / len(ratios)


def test_zero_for_identical_states():
    _, h_t = _states(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert squarehead_layer_loss(h_t.clone(), h_t, mask).item() == 0.0
    assert squarehead_loss([h_t, h_t * 3], [h_t, h_t * 3], mask).item() == 0.0


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(min_value=1e-2, max_value=1e3), seed=st.integers(0, 1000))
def test_invariant_to_scaling_both(scale, seed):
    h_s, h_t = _states(seed)
    base = squarehead_layer_loss(h_s, h_t, eps=0.0)
    scaled = squarehead_layer_loss(h_s * scale, h_t * scale, eps=0.0)
    assert math.isclose(scaled.item(), base.item(), rel_tol=1e-4)


def test_scaling_with_default_eps_is_nearly_invariant():
    h_s, h_t = _states(1)
    assert math.isclose(squarehead_layer_loss(h_s * 7, h_t * 7).item(), squarehead_layer_loss(h_s, h_t).item(), rel_tol=1e-5)


def test_padding_positions_are_ignored():
    h_s, h_t = _states(2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    base = squarehead_layer_loss(h_s, h_t, mask)
    noisy_s, noisy_t = h_s.clone(), h_t.clone()
    noisy_s[~mask] = 1e4 * torch.randn_like(noisy_s[~mask])
    noisy_t[~mask] = -1e4
    assert squarehead_layer_loss(noisy_s, noisy_t, mask).item() == pytest.approx(base.item(), rel=1e-6)
    # and the mask really matters: without it the noise dominates
    assert squarehead_layer_loss(noisy_s, noisy_t).item() != pytest.approx(base.item(), rel=1e-2)


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("normalize", ["token", "layer"])
def test_matches_float64_reference(with_mask, normalize):
    h_s, h_t = _states(3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]) if with_mask else None
    got = squarehead_layer_loss(h_s, h_t, mask, eps=1e-6, normalize=normalize).item()
    reference = _reference_token if normalize == "token" else _reference_layer
    assert got == pytest.approx(reference(h_s, h_t, mask, 1e-6), rel=1e-5)


def test_token_normalization_is_not_dominated_by_a_massive_activation():
    # An attention-sink token with 1000x the norm of the others (as in SmolLM2's middle blocks): per layer,
    # the others' errors nearly vanish from the loss; per token, they count as much as the sink's.
    h_s, h_t = _states(8, shape=(1, 6, 8))
    h_t[:, 0] *= 1000.0
    h_s[:, 0] = h_t[:, 0]  # the sink is matched exactly; every other token is off by O(1) relative error
    per_layer = squarehead_layer_loss(h_s, h_t, normalize="layer").item()
    per_token = squarehead_layer_loss(h_s, h_t, normalize="token").item()
    assert per_layer < 1e-4 < 0.5 < per_token
    assert per_token == pytest.approx(_reference_token(h_s, h_t, None, 1e-6), rel=1e-5)


def test_unknown_normalization_is_refused():
    h_s, h_t = _states(9)
    with pytest.raises(ValueError, match="token"):
        squarehead_layer_loss(h_s, h_t, normalize="batch")


def test_sum_over_layers_with_per_layer_masks_and_bf16_inputs():
    a_s, a_t = _states(4)
    b_s, b_t = _states(5, shape=(3, 2, 8))  # e.g. an encoder with another length
    mask_a = torch.tensor([[1, 1, 1, 0, 0]] * 3)
    expected = _reference_token(a_s, a_t, mask_a, 1e-6) + _reference_token(b_s, b_t, None, 1e-6)
    got = squarehead_loss([a_s, b_s], [a_t, b_t], [mask_a, None])
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)
    bf16 = squarehead_loss([a_s.bfloat16(), b_s.bfloat16()], [a_t.bfloat16(), b_t.bfloat16()], [mask_a, None])
    assert bf16.dtype == torch.float32 and bf16.item() == pytest.approx(expected, rel=2e-2)


def test_gradient_flows_to_student_only_through_real_tokens():
    h_s, h_t = _states(6)
    h_s.requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 3)
    squarehead_layer_loss(h_s, h_t, mask).backward()
    assert (h_s.grad[:, 3:] == 0).all() and (h_s.grad[:, :3] != 0).any()


def test_shape_errors():
    h_s, h_t = _states(7)
    with pytest.raises(ValueError):
        squarehead_layer_loss(h_s, h_t[:, :4])
    with pytest.raises(ValueError):
        squarehead_layer_loss(h_s, h_t, torch.ones(3, 4))
    with pytest.raises(ValueError):
        squarehead_loss([h_s], [h_t, h_t])


# ----- logit KD ---------------------------------------------------------------------------------------

def test_kd_matches_kl_div_on_hand_example():
    # batch 1, 3 positions, vocab 4; causal shift: logits at 0,1 predict labels at 1,2; label 2 is -100.
    z_s = torch.tensor([[[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0], [9.0, 9.0, 9.0, 9.0]]])
    z_t = torch.tensor([[[2.0, 1.0, 0.0, 0.0], [1.0, -1.0, 2.0, 0.5], [-9.0, 0.0, 9.0, 1.0]]])
    labels = torch.tensor([[5, 1, -100]])
    T = 2.0
    # Only position 0 (predicting label index 1) counts: label[2] is ignored and the last logits predict nothing.
    expected = F.kl_div(
        F.log_softmax(z_s[0, :1] / T, dim=-1), F.log_softmax(z_t[0, :1] / T, dim=-1),
        reduction="batchmean", log_target=True,
    ) * T**2
    got = kd_loss(z_s, z_t, labels, temperature=T, shift=True)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # by hand, in float64
    p_t = np.exp(z_t[0, 0].double().numpy() / T)
    p_t /= p_t.sum()
    p_s = np.exp(z_s[0, 0].double().numpy() / T)
    p_s /= p_s.sum()
    assert got.item() == pytest.approx(float((p_t * np.log(p_t / p_s)).sum() * T * T), rel=1e-5)


def test_kd_seq2seq_no_shift_and_all_positions():
    z_s, z_t = _states(8, shape=(2, 3, 6))
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    keep = (labels != -100).flatten()
    expected = F.kl_div(
        F.log_softmax(z_s.reshape(-1, 6)[keep], -1), F.log_softmax(z_t.reshape(-1, 6)[keep], -1),
        reduction="batchmean", log_target=True,
    )
    assert kd_loss(z_s, z_t, labels, shift=False).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kd_loss(z_t, z_t, None).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_rejects_bad_temperature():
    z_s, z_t = _states(9)
    with pytest.raises(ValueError):
        kd_loss(z_s, z_t, temperature=0.0)
