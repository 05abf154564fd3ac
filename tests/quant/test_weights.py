"""Int8 weight quantization: error <= scale/2 per element, zeros and masks kept exactly, same grid as the runtime."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseft.errors import ConfigError
from sparseft.quant import dequantize_weight, fake_quantize_weight, quantize_weight, weight_scale


def _sparse_weight(seed: int, rows: int, cols: int, density: float, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g, dtype=dtype) * torch.exp(torch.randn(rows, 1, generator=g, dtype=dtype))
    return W * (torch.rand(rows, cols, generator=g, dtype=dtype) < density)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 17), cols=st.integers(1, 70),
       density=st.floats(0.0, 1.0), granularity=st.sampled_from(["per_channel", "per_tensor"]))
def test_error_at_most_half_a_step_and_zeros_kept(seed, rows, cols, density, granularity):
    W = _sparse_weight(seed, rows, cols, density)
    wq = quantize_weight(W, granularity)
    assert wq.q.dtype == torch.int8 and wq.q.shape == W.shape
    assert int(wq.q.abs().max()) <= 127
    # the scale, recomputed here from its definition
    amax = W.abs().amax(dim=1, keepdim=True) if granularity == "per_channel" else W.abs().amax()
    expected = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    torch.testing.assert_close(wq.scale, expected, rtol=0, atol=0)
    err = (W - dequantize_weight(wq.q, wq.scale)).abs()
    assert bool((err <= wq.scale / 2 * (1 + 1e-12)).all())  # float64: the bound holds to rounding
    assert bool((wq.q[W == 0] == 0).all())
    assert bool((fake_quantize_weight(W, granularity)[W == 0] == 0).all())


def test_mask_forces_pruned_entries_to_zero_and_ignores_them_for_the_scale():
    W = torch.tensor([[100.0, 1.0, -2.0], [0.5, -0.25, 3.0]])
    mask = torch.tensor([[False, True, True], [True, True, False]])
    wq = quantize_weight(W, mask=mask)
    assert torch.equal(wq.q[~mask], torch.zeros(2, dtype=torch.int8))
    torch.testing.assert_close(wq.scale.flatten(), torch.tensor([2.0 / 127, 0.5 / 127]))
    assert wq.q[0, 2] == -127 and wq.q[1, 0] == 127


def test_all_zero_rows_and_small_weights():
    W = torch.zeros(3, 5)
    W[1, 2] = 1.0
    W[1, 3] = 1.0 / 127 / 2.1  # below half a step: rounds to 0 (sparser, never denser)
    wq = quantize_weight(W)
    assert torch.equal(wq.scale[0], torch.ones(1)) and int(wq.q[0].abs().sum()) == 0
    assert wq.q[1].tolist() == [0, 0, 127, 0, 0]


def test_bf16_weights_are_quantized_in_fp32_and_returned_as_bf16():
    W = _sparse_weight(0, 8, 32, 0.5, torch.float32).bfloat16()
    out = fake_quantize_weight(W)
    assert out.dtype == torch.bfloat16 and bool((out[W == 0] == 0).all())
    assert weight_scale(W).dtype == torch.float32


def test_bad_granularity_and_shape():
    with pytest.raises(ConfigError, match="per_channel"):
        quantize_weight(torch.ones(2, 2), "per_row")
    with pytest.raises(ConfigError, match="2-D"):
        quantize_weight(torch.ones(2, 2, 2))


def test_same_int8_values_as_the_runtime_format():
    from sparseft.runtime import format as format_module

    W = _sparse_weight(3, 48, 130, 0.4, torch.float32)
    ours = fake_quantize_weight(W)
    # the runtime quantizes independently; compressing our already-quantized weight must not move it
    torch.testing.assert_close(format_module.compress(W, "int8").decompress(), ours, rtol=1e-6, atol=0)
    torch.testing.assert_close(format_module.compress(ours, "int8").decompress(), ours, rtol=1e-6, atol=0)
