"""`sparseft finetune` end to end on a tiny Llama that uses SmolLM2's tokenizer (no training data download)."""

from __future__ import annotations

import json

import pytest
import torch

from sparseft.cli import main
from sparseft.prune import load_masks, magnitude_prune, save_masks
from tiny_models import build_tiny_model


@pytest.fixture
def tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer


def _tiny_folder(path, tokenizer, seed, sparsity=None):
    model = build_tiny_model("llama", seed, hidden_size=32, intermediate_size=64, vocab_size=len(tokenizer),
                             max_position_embeddings=64)
    if sparsity:
        save_masks(magnitude_prune(model, sparsity), path / "masks.safetensors")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def test_finetune_cli_keeps_masks_and_writes_history(tmp_path, tokenizer):
    torch.set_num_threads(1)
    _tiny_folder(tmp_path / "teacher", tokenizer, 0)
    _tiny_folder(tmp_path / "student", tokenizer, 1, sparsity=0.5)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"Question: {i} + {i} = ?\nAnswer: {2 * i}"}) for i in range(40)))
    out = tmp_path / "out"
    rc = main(["finetune", "--student", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"),
               "--data", str(data), "--loss", "ce+squarehead", "--steps", "3", "--batch-size", "2", "--seqlen", "16",
               "--save-steps", "2", "--logging-steps", "1", "--out", str(out)])
    assert rc == 0
    masks = load_masks(tmp_path / "student" / "masks.safetensors")
    assert all(torch.equal(masks[n], m) for n, m in load_masks(out / "masks.safetensors").items())
    assert (tmp_path / "out.checkpoints" / "checkpoint-2" / "masks.safetensors").is_file()
    record = json.loads((out / "stage.json").read_text())
    assert record["total_sparsity"] == pytest.approx(0.5, abs=1e-3)
    logged = [h for h in record["log_history"] if "loss" in h]
    assert len(logged) == 3 and all("loss_squarehead" in h and "loss_task" in h for h in logged)


def test_finetune_cli_rejects_distillation_without_teacher(tmp_path, capsys):
    rc = main(["finetune", "--student", "smollm2-135m", "--loss", "ce+squarehead", "--out", str(tmp_path)])
    assert rc == 1 and "--teacher" in capsys.readouterr().err


def test_finetune_stage_trains_keeps_masks_and_resumes(tmp_path, tokenizer):
    from sparseft.settings import FinetuneSettings
    from sparseft.stages import StageIO, run_finetune

    torch.set_num_threads(1)
    _tiny_folder(tmp_path / "dense", tokenizer, 0)
    _tiny_folder(tmp_path / "pruned", tokenizer, 1, sparsity=0.5)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("\n\n".join(f"{i} apples and {i} pears make {2 * i}." for i in range(30)))
    io = StageIO(str(tmp_path / "pruned"), tmp_path / "02-finetune", source=str(tmp_path / "dense"), resume=True)
    settings = FinetuneSettings(data=str(tmp_path / "data"), nsamples=30, steps=4, batch_size=2, seqlen=16)
    record = run_finetune(settings, io)
    assert record["total_sparsity"] == pytest.approx(0.5, abs=1e-3) and record["resumed_from"] is None
    assert record["teacher_model"] == str(tmp_path / "dense")  # teacher 'source': the run's dense model
    masks = load_masks(tmp_path / "pruned" / "masks.safetensors")
    assert all(torch.equal(masks[n], m) for n, m in load_masks(io.output / "masks.safetensors").items())
    assert (tmp_path / "02-finetune.checkpoints" / "checkpoint-4" / "masks.safetensors").is_file()
    # a rerun of an interrupted stage picks up its last checkpoint
    again = run_finetune(settings.model_copy(update={"steps": 5}), io)
    assert again["resumed_from"].endswith("checkpoint-4")
