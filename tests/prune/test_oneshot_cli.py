"""`sparseft oneshot` end to end on a tiny Llama saved with a byte-level tokenizer (no downloads)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sparseft.cli import main
from sparseft.data.calibration import calibration_batches
from sparseft.data.sources import load_texts
from sparseft.errors import ConfigError
from sparseft.models import find_prunable, load_model
from sparseft.prune.masks import load_masks
from tiny_models import byte_tokenizer


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "corpus.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    return path


def test_cli_writes_a_loadable_pruned_model_with_masks(tiny_llama_dir, corpus, tmp_path, capsys):
    out = tmp_path / "pruned"
    argv = ["oneshot", str(tiny_llama_dir), "--calib", str(corpus), "--nsamples", "8", "--seqlen", "32",
            "--nm", "2:4", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "model.layers.1.mlp.down_proj" in printed and "total" in printed
    model = load_model(out)
    masks = load_masks(out / "masks.safetensors")
    layers = find_prunable(model)
    assert set(masks) == set(layers)
    for name, module in layers.items():
        assert (module.weight[~masks[name]] == 0).all()
        assert (masks[name].reshape(module.weight.shape[0], -1, 4).sum(-1) == 2).all()
    record = json.loads((out / "stage.json").read_text())
    assert record["method"] == "sparsegpt" and record["nm"] == "2:4"
    assert all(layer["error"] >= 0 for layer in record["layers"])


def test_cli_low_memory_modes_write_the_same_folder(tiny_llama_dir, corpus, tmp_path, capsys):
    outs = {}
    for mode in ("on", "off"):
        outs[mode] = tmp_path / mode
        argv = ["oneshot", str(tiny_llama_dir), "--calib", str(corpus), "--nsamples", "8", "--seqlen", "32",
                "--method", "wanda", "--error-batches", "all", "--low-memory", mode, "--no-progress",
                "--out", str(outs[mode])]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert ("streamed block by block" in printed) == (mode == "on")
    a, b = (load_model(outs[m]).state_dict() for m in ("on", "off"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    masks = [load_masks(outs[m] / "masks.safetensors") for m in ("on", "off")]
    assert masks[0].keys() == masks[1].keys() and all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    records = [json.loads((outs[m] / "stage.json").read_text()) for m in ("on", "off")]
    assert [r["low_memory"] for r in records] == [True, False]
    assert records[0]["settings"]["error_batches"] is None and records[0]["layers"][0]["error_tokens"] == 8 * 32


def test_cli_reports_bad_input_without_traceback(tiny_llama_dir, tmp_path, capsys):
    assert main(["oneshot", str(tiny_llama_dir), "--calib", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 1
    assert "neither 'gsm'" in capsys.readouterr().err


def test_calibration_windows_are_seeded_and_sized(tiny_llama_dir, corpus):
    tok = byte_tokenizer()
    texts = load_texts([str(corpus)], "calibration")
    a = calibration_batches(tok, texts, nsamples=5, seqlen=16, batch_size=2, seed=3)
    b = calibration_batches(tok, texts, nsamples=5, seqlen=16, batch_size=2, seed=3)
    assert [x["input_ids"].shape for x in a] == [torch.Size([2, 16])] * 2 + [torch.Size([1, 16])]
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))


def test_jsonl_calibration_source(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert load_texts([str(path)], "calibration") == ["one", "two"]
    path.write_text('{"txt": "one"}\n')
    with pytest.raises(ConfigError, match="c.jsonl:1"):
        load_texts([str(path)], "calibration")
