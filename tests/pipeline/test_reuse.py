"""A finished stage is reused only when its settings and input match; a changed stage and every later
one run again; `sparseft demo` run twice only reports the second time."""

import json

import pytest
import yaml

from sparseft.cli import main
from sparseft.pipeline import run_recipe
from sparseft.recipe import load_recipe
from tiny_models import build_tiny_model


def _write(path, model, output, stages):
    path.write_text(yaml.safe_dump({"model": str(model), "output": str(output), "stages": stages}))
    return load_recipe(path)


def _stamps(folder):
    return {p.parent.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*/stage.json"))}


def test_changed_settings_rerun_the_stage_and_those_after_it(tmp_path):
    build_tiny_model("llama").save_pretrained(tmp_path / "dense")
    stages = [{"prune": {"sparsity": 0.3}}, {"compress": {"values": "bf16"}}, {"eval": {"data": "fortunes", "max_texts": 3}}]
    tokenizer_free = [stages[0], stages[1]]  # the tiny model has no tokenizer: no eval here
    first = run_recipe(_write(tmp_path / "r.yaml", tmp_path / "dense", tmp_path / "run", tokenizer_free))
    assert first[0]["total_sparsity"] == pytest.approx(0.3, abs=1e-3)
    before = _stamps(tmp_path / "run")

    same = run_recipe(_write(tmp_path / "r.yaml", tmp_path / "dense", tmp_path / "run", tokenizer_free))
    assert _stamps(tmp_path / "run") == before and same[1]["layers"] == first[1]["layers"]

    changed = [{"prune": {"sparsity": 0.6}}, stages[1]]
    again = run_recipe(_write(tmp_path / "r.yaml", tmp_path / "dense", tmp_path / "run", changed))
    assert again[0]["total_sparsity"] == pytest.approx(0.6, abs=1e-3)
    after = _stamps(tmp_path / "run")
    assert all(after[k] != before[k] for k in before)  # the compress stage read a new input: it ran again
    stored = json.loads((tmp_path / "run" / "01-prune" / "stage.json").read_text())
    assert stored["settings"]["sparsity"] == 0.6


@pytest.mark.packaged
def test_demo_twice_reports_the_second_time(tmp_path, smollm2_tokenizer, capsys):
    build_tiny_model("llama", hidden_size=32, intermediate_size=64, vocab_size=len(smollm2_tokenizer),
                     max_position_embeddings=512).save_pretrained(tmp_path / "tiny")
    smollm2_tokenizer.save_pretrained(tmp_path / "tiny")
    argv = ["demo", "--model", str(tmp_path / "tiny"), "--steps", "1", "--texts", "2", "--tokens", "2",
            "--out", str(tmp_path / "demo")]
    assert main(argv) == 0
    first = json.loads((tmp_path / "demo" / "summary.json").read_text())
    stamps = _stamps(tmp_path / "demo")
    assert len(stamps) == 8 and (tmp_path / "demo" / "demo.png").is_file()
    assert main(argv) == 0
    assert _stamps(tmp_path / "demo") == stamps  # every stage reused
    second = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert second["perplexity"] == first["perplexity"] and second["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
