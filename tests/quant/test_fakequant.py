"""Fake-quant models: tiny llama and gpt2 run quantized, keep their zeros, honour ignore, save and reload."""

import json

import pytest
import torch

from sparseft.cli import main
from sparseft.errors import ConfigError
from sparseft.models import find_prunable, load_model, weight_matrix
from sparseft.models.saving import save_model_folder
from sparseft.prune import load_masks, magnitude_prune
from sparseft.quant import (
    SCALES_FILE,
    QuantScheme,
    calibrate_input_scales,
    load_quantized,
    quantize_model,
    save_quantized,
)
from tiny_models import build_tiny_model

IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("scheme", ["w8a16", "w8a8", "w8a8-static"])
def test_sparse_model_runs_quantized_with_zeros_kept(family, scheme):
    model = build_tiny_model(family)
    masks = magnitude_prune(model, 0.5)
    ref = _logits(model)
    zeros = {n: int((weight_matrix(m) == 0).sum()) for n, m in find_prunable(model).items()}
    fq = quantize_model(model, scheme, masks=masks, calib_batches=[{"input_ids": IDS}])
    out = _logits(model)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert 0 < _rel(out, ref) < 0.05  # changed, but only by rounding
    for name, module in find_prunable(model).items():
        W = weight_matrix(module).detach()
        assert bool((W[~masks[name]] == 0).all())  # masks are (out, in), also for GPT-2's Conv1D
        assert int((W == 0).sum()) >= zeros[name]  # tiny weights may round to zero: never fewer zeros
        steps = W / fq.layers[name].weight_scale
        torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)  # on the int8 grid
        assert float(steps.abs().max()) <= 127 + 1e-4


def test_activation_hooks_quantize_inputs_and_can_be_removed():
    model = build_tiny_model("llama")
    fq = quantize_model(model, "w8a8")
    with_acts = _logits(model)
    fq.remove()
    weight_only = _logits(model)
    assert not torch.equal(with_acts, weight_only)
    fq.attach(model)
    torch.testing.assert_close(_logits(model), with_acts, rtol=0, atol=0)


def test_ignore_leaves_sensitive_layers_untouched():
    model = build_tiny_model("llama")
    before = {n: weight_matrix(m).clone() for n, m in find_prunable(model).items()}
    fq = quantize_model(model, "w8a8", ignore=[r"mlp\.down_proj$"])
    after = find_prunable(model)
    assert not any("down_proj" in n for n in fq.layers) and len(fq.layers) == len(before) - 2
    for name, W in before.items():
        same = torch.equal(weight_matrix(after[name]), W)
        assert same == name.endswith("down_proj")


def test_static_scales_are_the_input_absmax():
    model = build_tiny_model("gpt2")
    layers = find_prunable(model)
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a[0].abs().max())) for n, m in layers.items()]
    _logits(model)
    for h in hooks:
        h.remove()
    scales = calibrate_input_scales(model, layers, [{"input_ids": IDS}])
    for name in layers:
        torch.testing.assert_close(scales[name], seen[name] / 127)


def test_scheme_names_and_errors():
    assert QuantScheme.parse("w8a16").activations is None
    assert QuantScheme.parse("w8a8", "per_tensor") == QuantScheme("per_tensor", "dynamic")
    with pytest.raises(ConfigError, match="w8a16"):
        QuantScheme.parse("w4a16")
    with pytest.raises(ConfigError, match="calibration"):
        quantize_model(build_tiny_model("gpt2"), "w8a8-static")


def test_save_and_load_roundtrip(tmp_path):
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    fq = quantize_model(model, "w8a8-static", masks=masks, calib_batches=[{"input_ids": IDS}])
    expected = _logits(model)
    save_quantized(model, tmp_path / "q", fq, masks=masks, record={"note": "test"})
    assert (tmp_path / "q" / SCALES_FILE).is_file()
    plain = load_model(tmp_path / "q")  # an ordinary HF folder: loads without sparseft.quant
    loaded, fq2 = load_quantized(tmp_path / "q")
    torch.testing.assert_close(_logits(loaded), expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(_logits(plain), expected)  # the activation quantization comes from the hooks
    assert fq2.record() == fq.record()
    record = json.loads((tmp_path / "q" / "stage.json").read_text())
    assert record["stage"] == "quantize" and record["note"] == "test"


def test_cli_quantizes_a_pruned_folder(tmp_path, capsys):
    model = build_tiny_model("gpt2")
    masks = magnitude_prune(model, 0.6)
    save_model_folder(model, tmp_path / "pruned", masks=masks)
    code = main(["quantize", str(tmp_path / "pruned"), "--scheme", "w8a16", "--ignore", r"mlp\.c_proj$",
                 "--out", str(tmp_path / "q")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"scheme": "w8a16", "quantized_layers": 6, "ignored": [r"mlp\.c_proj$"]}
    q = load_model(tmp_path / "q")
    saved = load_masks(tmp_path / "q" / "masks.safetensors")
    for name, module in find_prunable(q).items():
        assert bool((weight_matrix(module)[~saved[name]] == 0).all())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_gptq_keeps_zeros_and_tracks_the_model_better_than_rounding(family):
    batches = [{"input_ids": torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(s))} for s in range(2)]
    models = {}
    for method in ("rtn", "gptq"):
        model = build_tiny_model(family)
        masks = magnitude_prune(model, 0.5)
        ref = _logits(model)
        fq = quantize_model(model, "w8a16", masks=masks, calib_batches=batches, method=method)
        models[method] = _rel(_logits(model), ref)
        for name, module in find_prunable(model).items():
            W = weight_matrix(module).detach()
            assert bool((W[~masks[name]] == 0).all())
            steps = W / fq.layers[name].weight_scale
            torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-3)
    assert models["gptq"] < models["rtn"]
