"""AMX kernels (csrc/kern_amx.c) vs torch float64 matmul of the decompressed weight, and the dispatch."""

from __future__ import annotations

import pytest
import torch
from runtime_helpers import masked

from sparseft.errors import ConfigError
from sparseft.runtime.format import compress
from sparseft.runtime.kernels import (
    AMX_MIN_BATCH,
    amx_available,
    amx_used,
    forced_amx,
    forced_isa,
    set_amx,
    set_num_threads,
    sparse_matmul,
)

needs_amx = pytest.mark.skipif(
    not amx_available(), reason="no AMX here (needs AMX-TILE/BF16/INT8, AVX512-BF16 and Linux >= 5.16)"
)

# Relative to max |x| |W|^T, as in test_kernels.py: bf16 x is split in two bf16 (~16 bits); int8 x is
# quantized per row to 16 bits. Both well below the error of storing the weights in bf16 / int8.
TOL = {"bf16": 3e-5, "int8": 2e-4}


def rel_err(x: torch.Tensor, cw, y: torch.Tensor, bias: torch.Tensor | None = None) -> float:
    wd = cw.decompress().double()
    ref = x.double() @ wd.T + (0 if bias is None else bias.double())
    scale = (x.double().abs() @ wd.abs().T).max().item() + 1e-12
    return (y.double() - ref).abs().max().item() / scale


def run(x: torch.Tensor, w: torch.Tensor, fmt: str, mode: str = "on", bias: torch.Tensor | None = None):
    cw = compress(w, fmt)
    with forced_amx(mode):
        assert amx_used(fmt, x.shape[0], w.shape[1]) == (mode == "on")
        y = sparse_matmul(x, cw, bias)
    return cw, y


@needs_amx
@pytest.mark.parametrize("fmt", ["bf16", "int8"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 63), (17, 65), (37, 130), (66, 257)])
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 0.99])
@pytest.mark.parametrize("batch", [1, 2, 15, 16, 17, 33, 64])
def test_matches_dense(fmt: str, shape: tuple[int, int], sparsity: float, batch: int) -> None:
    w = masked(shape, sparsity, seed=shape[0] * 1000 + shape[1])
    x = torch.randn(batch, shape[1])
    cw, y = run(x, w, fmt)
    assert rel_err(x, cw, y) < TOL[fmt], f"{fmt} {shape} batch {batch}"


@needs_amx
@pytest.mark.parametrize("fmt", ["bf16", "int8"])
@pytest.mark.parametrize("batch", [129, 200])
def test_large_batch_super_blocks(fmt: str, batch: int) -> None:
    """x over 1 MB once prepared: the kernel runs 256-row super-blocks with C tiles kept in memory."""
    k = 1300 if fmt == "bf16" else 2600
    w = masked((300, k), 0.7, seed=batch)
    w[::7] = 0  # all-zero rows
    x = torch.randn(batch, k)
    bias = torch.randn(300)
    cw, y = run(x, w, fmt, bias=bias)
    assert rel_err(x, cw, y, bias) < TOL[fmt]


@needs_amx
@pytest.mark.parametrize("fmt", ["bf16", "int8"])
@pytest.mark.parametrize("mode", ["on", "off"])
def test_all_zero_rows_bias_and_noncontiguous_input(fmt: str, mode: str) -> None:
    w = masked((45, 200), 0.6)
    w[::3] = 0
    w[:, 100:170] = 0
    bias = torch.randn(45)
    x = torch.randn(200, 19).t()  # (19, 200), non-contiguous
    assert not x.is_contiguous()
    for xs in (x, x[::2], x[:, :]):
        cw, y = run(xs, w, fmt, mode, bias)
        assert rel_err(xs, cw, y, bias) < TOL[fmt]


@needs_amx
@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_on_and_off_agree(fmt: str) -> None:
    w = masked((70, 333), 0.8, seed=3)
    x = torch.randn(24, 333)
    cw, y_on = run(x, w, fmt, "on")
    _, y_off = run(x, w, fmt, "off")
    tol = TOL[fmt] * (x.abs() @ cw.decompress().abs().T).max().item()
    assert (y_on - y_off).abs().max().item() < 2 * tol


@needs_amx
def test_outlier_activations_int8() -> None:
    """int8: x is quantized per row to 16 bits (step max|x_row| / 32767), exactly as in the batch-1 kernel,
    so an outlier coarsens the other entries: the error stays within half a step per term."""
    w = masked((50, 512), 0.7, seed=5)
    x = torch.randn(20, 512)
    x[:, 7] = 1000.0
    cw, y = run(x, w, "int8")
    wd = cw.decompress().double()
    err = (y.double() - x.double() @ wd.T).abs()
    step = x.abs().amax(dim=1, keepdim=True).double() / 32767
    assert (err <= 0.5 * step * wd.abs().sum(dim=1)[None, :] + 1e-4).all()
    y1 = torch.cat([sparse_matmul(x[i : i + 1], cw) for i in range(20)])  # batch-1 kernel, same quantization
    torch.testing.assert_close(y, y1, rtol=1e-5, atol=1e-3)


@needs_amx
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_threads_give_same_result(threads: int, fmt: str) -> None:
    w = masked((470, 150), 0.7)
    x = torch.randn(40, 150)
    cw = compress(w, fmt)
    set_num_threads(1)
    try:
        with forced_amx("on"):
            y1 = sparse_matmul(x, cw)
            set_num_threads(threads)
            yn = sparse_matmul(x, cw)
    finally:
        set_num_threads(None)
    assert torch.equal(y1, yn)  # rows are split across threads, never the sums


@needs_amx
def test_auto_mode_dispatch() -> None:
    with forced_amx("auto"):
        for fmt, n in AMX_MIN_BATCH.items():
            assert amx_used(fmt, n, 4096) and not amx_used(fmt, n - 1, 4096)
        assert not amx_used("fp32", 128, 4096)  # fp32 weights stay on the AVX-512 kernels
        assert not amx_used("bf16", 128, 4096, index="delta")
        assert not amx_used("int8", 128, 65537)  # int32 sums would not be exact
        with forced_isa("avx512"):  # a forced ISA tests its own kernels
            assert not amx_used("bf16", 128, 4096)
    with forced_amx("on"), forced_isa("avx2"):
        assert not amx_used("bf16", 128, 4096)


@needs_amx
def test_fp32_and_delta_fall_back() -> None:
    w = masked((40, 300), 0.95, seed=2)
    x = torch.randn(20, 300)
    with forced_amx("on"):
        for fmt, index in (("fp32", "bitmask"), ("bf16", "delta"), ("int8", "delta")):
            cw = compress(w, fmt, index=index)
            wd = cw.decompress().double()
            ref = x.double() @ wd.T
            assert (sparse_matmul(x, cw).double() - ref).abs().max() < 1e-4 * ref.abs().max()


def test_bad_mode_and_unavailable() -> None:
    with pytest.raises(ConfigError, match="unknown AMX mode"):
        set_amx("sometimes")
    if not amx_available():
        with pytest.raises(ConfigError, match="cannot run the AMX kernels"):
            set_amx("on")
