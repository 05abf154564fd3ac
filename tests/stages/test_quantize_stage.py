"""The quantize stage: a pruned tiny model in, a quantized folder with masks and scales out."""

import json

import torch

from sparseft.models import find_prunable, load_model
from sparseft.models.saving import save_model_folder
from sparseft.prune import load_masks, magnitude_prune
from sparseft.quant import SCALES_FILE, read_quantizer
from sparseft.settings import QuantizeSettings
from sparseft.stages import StageIO, run_quantize
from tiny_models import build_tiny_model


def test_quantize_stage_writes_a_quantized_sparse_folder(tmp_path):
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    save_model_folder(model, tmp_path / "in", masks=masks)
    settings = QuantizeSettings(scheme="w8a8", ignore=[r"down_proj$"])
    record = run_quantize(settings, StageIO(str(tmp_path / "in"), tmp_path / "out"))
    assert record["quantized_layers"] == 12 and record["quant"]["scheme"] == "w8a8"
    stored = json.loads((tmp_path / "out" / "stage.json").read_text())
    assert stored["stage"] == "quantize" and stored["settings"]["ignore"] == [r"down_proj$"]
    assert (tmp_path / "out" / SCALES_FILE).is_file()
    out = load_model(tmp_path / "out")
    kept = load_masks(tmp_path / "out" / "masks.safetensors")
    fq = read_quantizer(tmp_path / "out")
    for name, module in find_prunable(out).items():
        assert bool((module.weight[~kept[name]] == 0).all())
        if name in fq.layers:
            steps = module.weight.detach() / fq.layers[name].weight_scale
            torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)
        else:
            assert name.endswith("down_proj")
