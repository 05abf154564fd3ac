"""Recipes validate strictly with field paths; the pipeline runs stages in order and resumes."""

import json

import pytest
import yaml

from sparseft.errors import ConfigError
from sparseft.pipeline import run_recipe
from sparseft.recipe import load_recipe, parse_recipe
from tiny_models import build_tiny_model


def test_errors_name_the_field_path():
    bad = {"model": "m", "output": "o", "stages": [{"prune": {"sparsity": 0.5}}, {"oneshot": {"sparsity": 1.5, "x": 1}}]}
    with pytest.raises(ConfigError) as info:
        parse_recipe(bad)
    text = str(info.value)
    assert "stages.1.oneshot.sparsity" in text and "stages.1.oneshot.x" in text
    with pytest.raises(ConfigError, match="stages.0.prune.nm"):
        parse_recipe({"model": "m", "output": "o", "stages": [{"prune": {"nm": "4:2"}}]})
    with pytest.raises(ConfigError, match="exactly one"):
        parse_recipe({"model": "m", "output": "o", "stages": [{"prune": {}, "eval": {}}]})
    with pytest.raises(ConfigError, match="stages"):
        parse_recipe({"model": "m", "output": "o", "stages": []})


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "none.yaml")
    (tmp_path / "r.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(tmp_path / "r.yaml")


def test_pipeline_runs_prune_then_oneshot_magnitude_and_resumes(tmp_path):
    build_tiny_model("llama").save_pretrained(tmp_path / "dense")
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "model": str(tmp_path / "dense"), "output": str(tmp_path / "run"),
        "stages": [{"prune": {"sparsity": 0.3}}, {"oneshot": {"method": "magnitude", "sparsity": 0.6}}],
    }))
    records = run_recipe(load_recipe(recipe_path))
    assert records[0]["total_sparsity"] == pytest.approx(0.3, abs=1e-3)
    assert records[1]["total_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert (tmp_path / "run" / "02-oneshot" / "masks.safetensors").exists()
    # Resume: a finished stage is not redone (its record file stays the same object on disk).
    stamp = (tmp_path / "run" / "01-prune" / "stage.json").stat().st_mtime_ns
    again = run_recipe(load_recipe(recipe_path))
    assert (tmp_path / "run" / "01-prune" / "stage.json").stat().st_mtime_ns == stamp
    assert json.loads(json.dumps(again[1], default=str))["total_sparsity"] == pytest.approx(0.6, abs=1e-3)


@pytest.mark.packaged
def test_every_stage_in_one_recipe(tmp_path, smollm2_tokenizer):
    """prune -> finetune (SquareHead) -> quantize -> compress -> eval on a small llama with SmolLM2's tokenizer."""
    tokenizer = smollm2_tokenizer
    build_tiny_model("llama", vocab_size=len(tokenizer), tie_word_embeddings=True).save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    recipe = parse_recipe({
        "model": str(tmp_path / "dense"), "output": str(tmp_path / "run"),
        "stages": [
            {"prune": {"sparsity": 0.5}},
            {"finetune": {"steps": 3, "batch_size": 2, "seqlen": 32, "nsamples": 16}},
            {"quantize": {"scheme": "w8a16"}},
            {"compress": {"values": "int8"}},
            {"eval": {"seqlen": 64, "max_texts": 5}},
        ],
    })
    records = run_recipe(recipe)
    assert [r["stage"] for r in records] == ["prune", "finetune", "quantize", "compress", "eval"]
    assert records[1]["total_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert records[3]["layers"] == 2 * 7
    assert records[4]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert set(records[4]["perplexity"]) == {"gsm", "austen"}  # in-domain and out-of-domain by default
    assert all(1.0 < p < float("inf") for p in records[4]["perplexity"].values())
    assert all(n > 100 for n in records[4]["tokens"].values())
    assert (tmp_path / "run" / "02-finetune" / "masks.safetensors").exists()
    # Training turns the KV cache off; the saved model must generate with it again.
    assert json.loads((tmp_path / "run" / "02-finetune" / "config.json").read_text())["use_cache"] is True
