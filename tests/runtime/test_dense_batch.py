"""Large batches on a dense copy of the weight (runtime/dense_batch.py) against independent references."""

from __future__ import annotations

import pytest
import torch
from runtime_helpers import masked

from sparseft.errors import ConfigError
from sparseft.quant.activations import quantize_activation, quantize_per_token
from sparseft.runtime import SparseLinear, compress, dense_batch, forced_isa, linear, pack_weight
from sparseft.runtime.dense_batch import DENSE_MIN_ROWS, dense_rows, forced_dense_batches, quantize_rows


def _weight(fmt: str, shape: tuple[int, int] = (72, 200)):
    return compress(masked(shape, 0.6, seed=3), fmt)


def _copy_error(fmt: str, dtype: torch.dtype, monkeypatch) -> float:
    """Relative max error against float64 of a 40-row product on the `dtype` dense copy (asserted taken)."""
    monkeypatch.setattr(dense_batch, "COPY_DTYPE", dtype)
    cw = _weight(fmt)
    bias = torch.randn(72)
    handle = pack_weight(cw, bias)
    x = torch.randn(40, 200)
    with forced_dense_batches("on"):
        y = linear(x, handle)
    assert handle._dense is not None and handle._dense.weight.dtype == dtype  # it did take the copy
    ref = x.double() @ cw.decompress().double().T + bias.double()
    return float((y.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("fmt", ["bf16", "int8", "int4"])
def test_weight_only_dense_product_is_bf16_close_to_float64(fmt: str, monkeypatch) -> None:
    """x and the decoded weight rounded to bf16, fp32 sums, the result rounded once: about 3 bf16 roundings
    (2^-9 each) from the float64 product of the very weights the layer holds."""
    err = _copy_error(fmt, torch.bfloat16, monkeypatch)  # as on a CPU with AVX512-BF16
    assert 1e-5 < err < 1.5e-2  # rounded (not the fp32 kernels), but only as bf16 rounds


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16", "int8", "int4"])
def test_weight_only_fp32_copy_is_fp32_close_to_float64(fmt: str, monkeypatch) -> None:
    """On a CPU without fast bf16 (AVX-512 VNNI, no AVX512-BF16 / AMX) the copy is fp32: every value format
    decodes exactly, so only fp32 summation separates it from the float64 product."""
    assert _copy_error(fmt, torch.float32, monkeypatch) < 1e-5


@pytest.mark.parametrize("static_scale", [0.0, 0.04])
def test_w8a8_dense_product_is_the_sparse_kernels_bit_for_bit(static_scale: float) -> None:
    act = "static-int8" if static_scale else "dynamic-int8"
    handle = pack_weight(_weight("int8"), torch.randn(72), act, static_scale)
    x = torch.randn(40, 200) * 2
    x[3] = 0  # an all-zero token: scale 1
    with forced_dense_batches("off"):
        sparse = linear(x, handle)
    with forced_dense_batches("on"):
        dense = linear(x, handle)
    assert handle._dense is not None and handle._dense.weight.dtype == torch.int8
    assert torch.equal(dense, sparse)


def test_w8a8_dense_product_against_torch_integer_math() -> None:
    """The same result from quantize_per_token + int64 products written out here."""
    cw = _weight("int8")
    handle = pack_weight(cw, None, "dynamic-int8")
    x = torch.randn(30, 200)
    with forced_dense_batches("on"):
        y = linear(x, handle)
    q, s = quantize_per_token(x)
    acc = q.long() @ cw.dense_codes().long().T
    torch.testing.assert_close(y, acc.float() * s * cw.scales, rtol=1e-6, atol=0)


def test_quantize_rows_rounds_as_torch_does() -> None:
    x = torch.randn(17, 333) * 5
    x[0] = 0  # an all-zero token: scale 1
    x[1, :5] = torch.tensor([0.125, 0.375, -0.625, 1e9, -1e9])  # at scale 0.25: ties to even, clipping
    q, s = quantize_rows(x)
    ref_q, ref_s = quantize_per_token(x)
    assert torch.equal(q, ref_q) and torch.equal(s, ref_s)
    q, s = quantize_rows(x, 0.25)
    assert q[1, :5].tolist() == [0, 2, -2, 127, -127]
    assert torch.equal(q, quantize_activation(x, torch.tensor(0.25))) and bool((s == 0.25).all())
    with forced_isa("portable"):
        assert torch.equal(quantize_rows(x)[0], ref_q)


def test_fp32_and_fp16_values_never_take_the_bf16_copy(monkeypatch) -> None:
    monkeypatch.setattr(dense_batch, "COPY_DTYPE", torch.bfloat16)
    for fmt in ("fp32", "fp16"):
        handle = pack_weight(_weight(fmt))
        with forced_dense_batches("on"):
            linear(torch.randn(64, 200), handle)
        assert handle._dense is None


def test_fp32_copies_leave_very_sparse_layers_on_the_sparse_kernels(monkeypatch) -> None:
    """Under fp32 copies a layer below `FP32_COPY_MIN_DENSITY` stored keeps its kernels (they skip enough)."""
    monkeypatch.setattr(dense_batch, "COPY_DTYPE", torch.float32)
    sparse, denser = compress(masked((72, 200), 0.9, seed=3), "int8"), compress(masked((72, 200), 0.6, seed=3), "int8")
    assert sparse.density < dense_batch.FP32_COPY_MIN_DENSITY <= denser.density
    for cw, copied in ((sparse, False), (denser, True)):
        handle = pack_weight(cw)
        with forced_dense_batches("on"):
            linear(torch.randn(64, 200), handle)
        assert (handle._dense is not None) == copied


def test_thresholds_modes_and_forced_isa() -> None:
    with forced_dense_batches("off"):
        assert dense_rows() == 0 and dense_rows(True) == 0
    with forced_dense_batches("on"):
        assert dense_rows() == 2 and dense_rows(True) == 2
        with forced_isa("portable"):
            assert dense_rows() == 2  # "on" holds under a forced ISA
    with forced_dense_batches("auto"):
        expected = DENSE_MIN_ROWS[dense_batch.copy_dtype()] if dense_batch.COPY_DTYPE is not None else {False: 0, True: 0}
        assert (dense_rows(), dense_rows(True)) == (expected[False], expected[True])
        with forced_isa("portable"):
            assert dense_rows() == 0  # the tests of each kernel path see their own kernels
    with pytest.raises(ConfigError, match="dense-batch mode"):
        dense_batch.set_dense_batches("always")


def test_batch_one_and_below_the_threshold_stay_sparse() -> None:
    handle = pack_weight(_weight("int8"))
    with forced_dense_batches("on"):
        linear(torch.randn(1, 200), handle)
    assert handle._dense is None


def test_sparse_linear_keeps_shape_and_dtype_on_the_dense_path() -> None:
    layer = SparseLinear(_weight("bf16"), torch.randn(72))
    x = torch.randn(2, 20, 200, dtype=torch.bfloat16)
    with forced_dense_batches("on"):
        y = layer(x)
    assert y.shape == (2, 20, 72) and y.dtype == torch.bfloat16
    with forced_dense_batches("off"):
        ref = layer(x)
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=2e-2 * float(ref.abs().max()))
