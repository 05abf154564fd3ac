"""A quantized folder (GPTQ: rows whose largest |q| is below 127) compresses to exactly its int8 values
and scales, through the recipe's compress stage and the `sparseft compress` command, and survives the
compressed checkpoint's save/load unchanged."""

from __future__ import annotations

import pytest
import torch

from sparseft.prune import magnitude_prune
from sparseft.quant import quantize_model, read_quantizer, save_quantized
from sparseft.runtime import SparseLinear, compress, load_compressed
from tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def gptq_folder(tmp_path_factory):
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 128, (4, 32), generator=g)} for _ in range(4)]
    fq = quantize_model(model, "w8a8", ignore=[r"down_proj$"], masks=masks, calib_batches=batches, method="gptq")
    folder = tmp_path_factory.mktemp("q") / "gptq-w8a8"
    save_quantized(model, folder, fq, masks=masks)
    weights = {name: model.get_submodule(name).weight.detach().clone() for name in fq.layers}
    return folder, weights


def _expected(weights, fq):
    """name -> (int8 q, fp32 scales) of the fake-quant weights: W = q * s exactly, so q = round(W / s)."""
    out = {}
    for name, w in weights.items():
        s = fq.layers[name].weight_scale.reshape(-1, 1)
        q = torch.round(w / s)
        assert torch.equal(q * s, w)  # the folder holds grid values
        out[name] = (q.to(torch.int8), s.reshape(-1))
    return out


def _check_layers(model, expected) -> None:
    for name, (q, s) in expected.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, SparseLinear) and layer.fmt == "int8" and layer.act == "dynamic-int8"
        bits = layer.compressed().bits()
        assert torch.equal(layer.values[: int(bits.sum())], q[bits]), name
        assert bool((q[~bits] == 0).all())
        assert torch.equal(layer.scales, s), name


def test_gptq_grid_is_not_the_max_over_127_grid(gptq_folder) -> None:
    """Guard: without the kept scales, compressing would change int8 values (so the test below bites)."""
    folder, weights = gptq_folder
    fq = read_quantizer(folder)
    changed = 0
    for name, (q, _) in _expected(weights, fq).items():
        plain = compress(weights[name], "int8")
        bits = plain.bits()
        changed += int((plain.values[: plain.nnz] != q[bits]).sum())
    assert changed > 0


def test_compress_stage_keeps_values_and_scales_exactly(gptq_folder, tmp_path) -> None:
    from sparseft.settings import CompressSettings
    from sparseft.stages import StageIO, run_compress

    folder, weights = gptq_folder
    record = run_compress(CompressSettings(values="int8"), StageIO(str(folder), tmp_path / "c"))
    assert record["int8_layers"] == 12 and record["w8a8_layers"] == 12 and record["layers"] == 14
    model = load_compressed(tmp_path / "c")
    _check_layers(model, _expected(weights, read_quantizer(folder)))
    down = model.model.layers[0].mlp.down_proj  # left in full precision by the quantize stage
    assert down.fmt == "fp32" and down.act == "none"


def test_compress_command_keeps_values_and_scales_exactly(gptq_folder, tmp_path) -> None:
    from sparseft.cli import main

    folder, weights = gptq_folder
    assert main(["compress", str(folder), "--out", str(tmp_path / "cli"), "--format", "int8"]) == 0
    _check_layers(load_compressed(tmp_path / "cli"), _expected(weights, read_quantizer(folder)))


def test_given_scales_per_row_or_per_tensor_give_back_q_exactly() -> None:
    from sparseft.errors import ConfigError
    from sparseft.quant import quantize_weight

    g = torch.Generator().manual_seed(3)
    w = torch.randn(20, 70, generator=g) * (torch.rand(20, 70, generator=g) > 0.5)
    for granularity in ("per_channel", "per_tensor"):
        wq = quantize_weight(w, granularity)
        cw = compress(wq.dequantize(), "int8", scales=wq.scale)
        bits = cw.bits()
        assert torch.equal(cw.values[: cw.nnz], wq.q[bits]) and torch.equal(bits, wq.q != 0)
        assert torch.equal(cw.decompress(), wq.dequantize())
    with pytest.raises(ConfigError, match="scales"):
        compress(w, "int8", scales=torch.ones(3))
    with pytest.raises(ConfigError, match="int8"):
        compress(w, "bf16", scales=torch.ones(20))
