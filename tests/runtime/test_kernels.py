"""Kernels vs torch dense matmul of the decompressed weight, on every ISA path."""

from __future__ import annotations

import pytest
import torch
from runtime_helpers import all_nonzero, delta_formats, masked

from sparseft.runtime.format import compress
from sparseft.runtime.formats import FORMATS
from sparseft.runtime.kernels import best_isa, forced_isa, pack_weight, set_num_threads, sparse_matmul

# Relative to max |x| |W|^T: fp32 rounding (fp16: exact values, fp32 sums); bf16 path splits x into two
# bf16; int8 path quantizes x to 16 bits, int4 to 15 bits.
TOL = {"fp32": 2e-6, "fp16": 2e-6, "bf16": 3e-5, "int8": 2e-4, "int4": 3e-4}


def check(
    x: torch.Tensor,
    w: torch.Tensor,
    fmt: str,
    isa: str,
    bias: torch.Tensor | None = None,
    index: str = "bitmask",
) -> None:
    cw = compress(w, fmt, index=index)
    wd = cw.decompress().double()
    ref = x.double() @ wd.T + (0 if bias is None else bias.double())
    with forced_isa(isa):
        y = sparse_matmul(x, cw, bias)
    scale = (x.double().abs() @ wd.abs().T).max().item() + 1e-12
    err = (y.double() - ref).abs().max().item() / scale
    assert err < TOL[fmt], f"{fmt} {isa} shape {tuple(w.shape)} batch {x.shape[0]}: rel err {err:.2e}"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 3, 7, 13, 21, 40])
@pytest.mark.parametrize("shape", [(1, 1), (5, 63), (37, 130), (66, 257)])
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 0.99])
def test_matches_dense(isa: str, fmt: str, batch: int, shape: tuple[int, int], sparsity: float) -> None:
    w = masked(shape, sparsity, seed=shape[0] * 1000 + shape[1])
    x = torch.randn(batch, shape[1])
    check(x, w, fmt, isa)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(5, 63), (37, 130), (66, 257), (9, 576)])
def test_dense_rows_match_dense(isa: str, fmt: str, shape: tuple[int, int]) -> None:
    """Every column stored (a dense lm_head in the bitmask layout): the batch-1 kernels that read no mask."""
    w = all_nonzero(shape, seed=shape[1])
    assert pack_weight(compress(w, fmt)).all_stored
    check(torch.randn(1, shape[1]), w, fmt, isa, bias=torch.randn(shape[0]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_zero_rows_bias_and_noncontiguous_input(isa: str, fmt: str) -> None:
    w = masked((45, 200), 0.6)
    w[::3] = 0
    w[:, 100:170] = 0
    bias = torch.randn(45)
    x = torch.randn(200, 9).t()  # (9, 200), non-contiguous
    assert not x.is_contiguous()
    check(x, w, fmt, isa, bias)
    check(x[::2], w, fmt, isa, bias)  # strided rows


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 4, 20])
def test_threads_give_same_result(threads: int, batch: int) -> None:
    w = masked((300, 150), 0.7)
    x = torch.randn(batch, 150)
    cw = compress(w, "bf16")
    set_num_threads(1)
    try:
        y1 = sparse_matmul(x, cw)
        set_num_threads(threads)
        yn = sparse_matmul(x, cw)
    finally:
        set_num_threads(None)
    assert torch.equal(y1, yn)  # rows are split, never the sums: results are bit-identical


def test_leading_dims_and_empty_batch() -> None:
    w = masked((8, 16), 0.5)
    cw = compress(w, "fp32")
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(sparse_matmul(x, cw), x @ w.T, rtol=1e-5, atol=1e-5)
    assert sparse_matmul(torch.randn(0, 16), cw).shape == (0, 8)


@pytest.mark.parametrize("fmt", delta_formats())
@pytest.mark.parametrize("batch", [1, 3, 21])
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.99])
def test_delta_index_matches_dense(fmt: str, batch: int, sparsity: float) -> None:
    w = masked((37, 700), sparsity, seed=batch)
    w[3] = 0
    w[4, [0, 699]] = 1.5  # a gap of 698 zeros: needs filler entries
    x = torch.randn(700, batch).t()
    check(x, w, fmt, "portable", torch.randn(37), index="delta")


@pytest.mark.skipif(best_isa() != "avx512", reason="the row orders are of the AVX-512 batch-1 kernels")
@pytest.mark.parametrize("act", ["none", "dynamic-int8"])
def test_both_row_orders_give_identical_int8_results(act: str) -> None:
    """Integer sums in either order: the outputs are equal bit for bit, tails of 1-3 rows included."""
    from sparseft.runtime.isa import forced_spmv_order
    from sparseft.runtime.kernels import linear, pack_weight

    for m, k in [(7, 130), (66, 1000), (5, 63)]:
        handle = pack_weight(compress(masked((m, k), 0.7, seed=m), "int8"), act=act)
        x = torch.randn(1, k)
        with forced_spmv_order("sequential"):
            seq = linear(x, handle)
        with forced_spmv_order("tiled"):
            tiled = linear(x, handle)
        assert torch.equal(seq, tiled)


def test_unknown_row_order_is_refused() -> None:
    from sparseft.errors import ConfigError
    from sparseft.runtime.isa import set_spmv_order

    with pytest.raises(ConfigError, match="sequential, tiled"):
        set_spmv_order("zigzag")
