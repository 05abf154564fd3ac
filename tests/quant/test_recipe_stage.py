"""The recipe's quantize stage: a pruned tiny model in, a quantized folder with masks and scales out."""

import json
from types import SimpleNamespace

import pytest
import torch

from sparseft.models import find_prunable, load_model
from sparseft.models.saving import save_model_folder
from sparseft.prune import load_masks, magnitude_prune
from sparseft.quant import SCALES_FILE, read_quantizer
from sparseft.quant.recipe_stage import quantize_stage
from tiny_models import build_tiny_model


def test_quantize_stage_writes_a_quantized_sparse_folder(tmp_path):
    recipe = pytest.importorskip("sparseft.recipe", reason="the recipe schema is absent")
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    save_model_folder(model, tmp_path / "in", masks=masks)
    ctx = SimpleNamespace(input=tmp_path / "in", output=tmp_path / "out", source=tmp_path / "in",
                          recipe=SimpleNamespace(dtype="float32"))
    settings = recipe.QuantizeStage(scheme="w8a8", ignore=[r"down_proj$"])
    record = quantize_stage(ctx, settings)
    assert record["quantized_layers"] == 12 and record["quant"]["scheme"] == "w8a8"
    assert json.loads((tmp_path / "out" / "sparseft.json").read_text())["stage"] == "quantize"
    assert (tmp_path / "out" / SCALES_FILE).is_file()
    out = load_model(tmp_path / "out")
    kept = load_masks(tmp_path / "out" / "masks.safetensors")
    fq = read_quantizer(tmp_path / "out")
    for name, module in find_prunable(out).items():
        assert bool((module.weight[~kept[name]] == 0).all())
        if name in fq.layers:
            steps = module.weight.detach() / fq.layers[name].weight_scale
            torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)
