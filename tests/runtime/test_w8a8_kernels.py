"""The W8A8 kernels (int8 weights x int8 activations) against an independent integer reference in torch.

Reference: activations quantized by `sparseft.quant.activations` (per token, or a static scale), weights by
`sparseft.quant.weights.quantize_weight`, then an int64 matmul. The kernels' int32 accumulators must
equal it exactly on every ISA path, and y = acc * x_scale * w_scale + bias must match to fp32 rounding.
"""

from __future__ import annotations

import pytest
import torch
from runtime_helpers import all_nonzero, masked

from sparseft.errors import ConfigError
from sparseft.quant import quantize_activation, quantize_per_token, quantize_weight
from sparseft.runtime.format import DENSE_ABOVE, compress
from sparseft.runtime.kernels import forced_isa, pack_weight, set_num_threads, sparse_matmul_w8a8


def reference(x: torch.Tensor, w: torch.Tensor, bias=None, input_scale=None):
    """(int64 acc (N, M), float64 y) computed in torch from the quantized x and W."""
    if input_scale is None:
        qx, sx = quantize_per_token(x)
    else:
        sx = torch.full((x.shape[0], 1), input_scale)
        qx = quantize_activation(x, torch.tensor(input_scale))
    wq = quantize_weight(w)
    acc = qx.long() @ wq.q.long().T
    y = acc.double() * sx.double() * wq.scale.double().T
    return acc, y + (0 if bias is None else bias.double())


def check(x, w, isa, bias=None, input_scale=None) -> None:
    cw = compress(w, "int8")
    acc_ref, y_ref = reference(x, w, bias, input_scale)
    with forced_isa(isa):
        acc = sparse_matmul_w8a8(x, cw, input_scale=input_scale, raw_acc=True)
        y = sparse_matmul_w8a8(x, cw, bias, input_scale)
    assert acc.dtype == torch.int32
    assert torch.equal(acc.long(), acc_ref), f"{isa} {tuple(w.shape)} batch {x.shape[0]}: int32 sums differ"
    # fp32 epilogue: one rounding of acc, two products and the bias add
    tol = 4e-7 * (y_ref.abs() + (0 if bias is None else bias.double().abs())) + 1e-30
    assert bool(((y.double() - y_ref).abs() <= tol).all()), f"{isa} {tuple(w.shape)}: epilogue off"


@pytest.mark.parametrize("batch", [1, 2, 5, 13, 33])
@pytest.mark.parametrize("shape", [(1, 1), (5, 63), (37, 130), (66, 257), (9, 1000)])
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 0.99])
def test_exact_integer_sums(isa: str, batch: int, shape: tuple[int, int], sparsity: float) -> None:
    w = masked(shape, sparsity, seed=shape[0] * 1000 + shape[1])
    x = torch.randn(batch, shape[1]) * torch.linspace(0.1, 3, batch)[:, None]  # token scales differ
    check(x, w, isa)


def test_every_batch_size_1_to_33(isa: str) -> None:
    w = masked((23, 200), 0.7, seed=1)
    for batch in range(1, 34):
        check(torch.randn(batch, 200), w, isa, bias=torch.randn(23))


def test_zero_rows_zero_tokens_bias_and_strided_input(isa: str) -> None:
    w = masked((45, 200), 0.6, seed=2)
    w[::3] = 0  # all-zero rows
    w[:, 100:170] = 0  # all-zero mask words
    bias = torch.randn(45)
    x = torch.randn(200, 9).t()  # (9, 200), non-contiguous
    x[4] = 0  # an all-zero token: scale 1, q 0
    check(x, w, isa, bias)
    check(x[::2], w, isa, bias)
    with forced_isa(isa):
        y = sparse_matmul_w8a8(x, compress(w, "int8"), bias)
    assert torch.equal(y[4], bias) and torch.equal(y[:, ::3], bias[::3].expand(9, -1))


def test_zeros_are_not_stored_and_stay_zero() -> None:
    w = masked((40, 300), 0.8, seed=3)
    cw = compress(w, "int8")
    assert torch.equal(cw.bits(), w != 0) and cw.nnz == int((w != 0).sum())
    assert bool((cw.decompress()[w == 0] == 0).all())


@pytest.mark.parametrize("input_scale", [0.01, 0.05])
def test_static_input_scale_clips_like_torch(isa: str, input_scale: float) -> None:
    w = masked((30, 150), 0.5, seed=4)
    x = torch.randn(6, 150)  # max|x| / 0.01 > 127: clipped
    check(x, w, isa, torch.randn(30), input_scale)


def test_largest_inputs_stay_exact(isa: str) -> None:
    """K = 65536 with every product at its largest: the shifted int32 sum is just below 2^31."""
    k = 65536
    w = torch.full((3, k), 1.0)
    w[1] = -1.0
    w[2, ::2] = 0.0
    x = torch.cat([torch.full((1, k), 2.0), torch.full((1, k), -2.0)])
    check(x, w, isa)


@pytest.mark.parametrize("shape", [(5, 63), (37, 130), (66, 257), (9, 576), (13, 1000)])
@pytest.mark.parametrize("batch", [1, 3])
def test_dense_rows_exact(isa: str, shape: tuple[int, int], batch: int) -> None:
    """Every column stored (an int8 lm_head): batch 1 takes the kernels without mask words; the tail
    word of a row (K not a multiple of 64) must not read the next row's values."""
    w = all_nonzero(shape, seed=shape[1])
    assert pack_weight(compress(w, "int8"), act="dynamic-int8").all_stored
    check(torch.randn(batch, shape[1]), w, isa, bias=torch.randn(shape[0]))


def test_nearly_dense_weights_store_their_zeros(isa: str) -> None:
    """At DENSE_ABOVE density or more every column is stored (zeros as values) and the kernels skip the
    mask; just below it, zeros are left out and the mask path runs; both compute the same products."""
    g = torch.Generator().manual_seed(7)
    for density, stored in [(DENSE_ABOVE + 0.02, True), (DENSE_ABOVE - 0.05, False)]:
        w = all_nonzero((21, 300)) * (torch.rand(21, 300, generator=g) < density)
        cw = compress(w, "int8")
        assert pack_weight(cw).all_stored == stored and (cw.nnz == w.numel()) == stored
        assert torch.equal(cw.decompress() == 0, w == 0)
        check(torch.randn(1, 300), w, isa)


def test_too_wide_or_wrong_format_is_refused() -> None:
    with pytest.raises(ConfigError, match="in_features"):
        sparse_matmul_w8a8(torch.randn(1, 65537), compress(torch.ones(2, 65537), "int8"))
    with pytest.raises(ConfigError, match="int8 values"):
        sparse_matmul_w8a8(torch.randn(1, 8), compress(torch.ones(2, 8), "bf16"))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("batch", [1, 16])
def test_threads_give_same_result(threads: int, batch: int) -> None:
    w = masked((300, 150), 0.7, seed=5)
    x = torch.randn(batch, 150)
    cw = compress(w, "int8")
    set_num_threads(1)
    try:
        y1 = sparse_matmul_w8a8(x, cw)
        set_num_threads(threads)
        yn = sparse_matmul_w8a8(x, cw)
    finally:
        set_num_threads(None)
    assert torch.equal(y1, yn)
