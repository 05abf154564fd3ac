"""Format round trips and byte layout, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_helpers import masked

from sparseft.errors import ConfigError
from sparseft.runtime.format import compress
from sparseft.runtime.formats import FORMATS


def test_fp32_round_trip_is_exact() -> None:
    w = masked((37, 130), 0.7)
    assert torch.equal(compress(w, "fp32").decompress(), w)


def test_bf16_round_trip_equals_bf16_rounding() -> None:
    w = masked((20, 65), 0.5)
    assert torch.equal(compress(w, "bf16").decompress(), w.bfloat16().float())


def test_fp16_round_trip_equals_fp16_rounding() -> None:
    w = masked((20, 65), 0.5) * 100
    w[0, 0] = 1e-6  # an fp16 subnormal
    cw = compress(w, "fp16")
    assert cw.values.dtype == torch.float16 and cw.values.numel() * 2 == cw.nnz * 2 + 64
    assert torch.equal(cw.decompress(), w.half().float())


def test_fp16_refuses_weights_it_cannot_hold() -> None:
    with pytest.raises(ConfigError, match="65504"):
        compress(torch.tensor([[70000.0, 0.0]]), "fp16")


def test_int8_round_trip_within_half_a_step_per_row() -> None:
    w = masked((16, 100), 0.6)
    d = compress(w, "int8").decompress()
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert ((d - w).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(d != 0, (w != 0) & (d != 0))  # no value appears where w is zero


def test_byte_layout() -> None:
    """Bit j of word w is column 64 w + j; values are row-major in column order; rowptr offsets."""
    w = torch.zeros(2, 70)
    w[0, 0], w[0, 63], w[0, 64], w[1, 69] = 1.0, 2.0, 3.0, 4.0
    cw = compress(w, "fp32")
    words = cw.mask.numpy().view(np.uint64)
    assert words.tolist() == [[1 | (1 << 63), 1], [0, 1 << 5]]
    assert cw.values[:4].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert cw.rowptr.tolist() == [0, 3, 4]
    assert cw.values.numel() * 4 == 4 * 4 + 64  # 64 bytes of padding


def test_explicit_mask_drops_values() -> None:
    w = torch.ones(3, 5)
    keep = torch.rand(3, 5) > 0.5
    assert torch.equal(compress(w, "fp32", keep).decompress(), keep.float())


def test_bad_format_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="expected one of"):
        compress(torch.ones(2, 2), "fp8")


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 9),
    k=st.integers(1, 200),
    sparsity=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    fmt=st.sampled_from(FORMATS),
    index=st.sampled_from(["bitmask", "delta"]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(m: int, k: int, sparsity: float, fmt: str, index: str, seed: int) -> None:
    w = masked((m, k), sparsity, seed)
    if fmt == "int4":
        index = "bitmask"  # grouped scales: bitmask index only
    cw = compress(w, fmt, index=index)
    d = cw.decompress()
    if index == "bitmask":
        assert cw.nnz == int((w != 0).sum())
    if fmt != "int8":  # int8 may round a tiny value to a stored zero
        assert torch.equal(cw.bits(), w != 0)
    if fmt == "fp32":
        assert torch.equal(d, w)
    elif fmt == "bf16":
        assert torch.equal(d, w.bfloat16().float())
    elif fmt == "fp16":
        assert torch.equal(d, w.half().float())
    elif fmt == "int8":
        assert (d - w).abs().max() <= w.abs().max() / 254 + 1e-6
    else:  # int4: half a step of the group's scale (max / 7)
        assert (d - w).abs().max() <= w.abs().max() / 14 + 1e-6


def test_delta_layout_and_fillers() -> None:
    """Gap = zeros skipped before each value; a gap above 255 gets a zero filler 256 columns on."""
    w = torch.zeros(2, 600)
    w[0, 2], w[0, 3], w[1, 599] = 1.0, 2.0, 3.0
    cw = compress(w, "fp32", index="delta")
    assert cw.mask[: cw.nnz].tolist() == [2, 0, 255, 255, 87]
    assert cw.values[: cw.nnz].tolist() == [1.0, 2.0, 0.0, 0.0, 3.0]
    assert cw.rowptr.tolist() == [0, 2, 5]
    assert torch.equal(cw.decompress(), w)


def test_auto_index_picks_delta_only_at_very_high_sparsity() -> None:
    assert compress(masked((64, 512), 0.99), "int8", index="auto").index == "delta"
    assert compress(masked((64, 512), 0.9), "int8", index="auto").index == "bitmask"
    assert compress(masked((64, 512), 0.95), "fp32", index="auto").index == "delta"
