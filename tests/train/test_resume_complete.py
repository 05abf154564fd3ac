"""A fine-tune killed while saving a checkpoint resumes from the newest *complete* one."""

import json

from sparseft.prune import magnitude_prune, save_masks
from sparseft.settings import FinetuneSettings
from sparseft.stages import StageIO, run_finetune
from sparseft.train.trainer import COMPLETE_FILE, last_complete_checkpoint
from tiny_models import build_tiny_model, byte_tokenizer


def _student(folder, sparsity: float = 0.5):
    model = build_tiny_model("llama", vocab_size=260)
    save_masks(magnitude_prune(model, sparsity), folder / "masks.safetensors")
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)


def _settings(tmp_path, **update) -> FinetuneSettings:
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps({"text": f"{i} plus {i} is {2 * i}."}) for i in range(40)))
    return FinetuneSettings(teacher=None, loss={"task": 1, "squarehead": 0}, data=str(tmp_path / "data.jsonl"),
                            steps=4, save_steps=2, batch_size=2, seqlen=16, logging_steps=1, **update)


def test_resume_skips_a_checkpoint_cut_short(tmp_path):
    _student(tmp_path / "student")
    settings = _settings(tmp_path)
    io = StageIO(str(tmp_path / "student"), tmp_path / "out", resume=True)
    run_finetune(settings, io)
    checkpoints = tmp_path / "out.checkpoints"
    assert last_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-4")
    # kill -9 while checkpoint-4 was written: HF's files may be there, the masks and the marker are not
    (checkpoints / "checkpoint-4" / COMPLETE_FILE).unlink()
    (checkpoints / "checkpoint-4" / "masks.safetensors").unlink()
    assert last_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-2")
    again = run_finetune(settings.model_copy(update={"steps": 5}), io)
    assert again["resumed_from"] == str(checkpoints / "checkpoint-2")
    assert [h["step"] for h in again["log_history"] if "loss" in h][-1] == 5


def test_resume_never_continues_another_runs_checkpoint(tmp_path):
    _student(tmp_path / "a", 0.5)
    _student(tmp_path / "b", 0.7)
    settings = _settings(tmp_path)
    checkpoints = tmp_path / "out.checkpoints"
    first = run_finetune(settings, StageIO(str(tmp_path / "a"), tmp_path / "out", resume=True))
    assert first["resumed_from"] is None and last_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-4")
    # another student, then another learning rate, into the same --out with --resume: both start afresh
    other = run_finetune(settings, StageIO(str(tmp_path / "b"), tmp_path / "out", resume=True, overwrite=True))
    assert other["resumed_from"] is None and other["total_sparsity"] > 0.65
    faster = settings.model_copy(update={"learning_rate": 3e-4})
    assert run_finetune(faster, StageIO(str(tmp_path / "b"), tmp_path / "out", resume=True, overwrite=True))[
        "resumed_from"] is None
    # the same run again (only how often it logs differs) does resume from its own checkpoint
    again = run_finetune(faster.model_copy(update={"logging_steps": 2}),
                         StageIO(str(tmp_path / "b"), tmp_path / "out", resume=True, overwrite=True))
    assert again["resumed_from"] == str(checkpoints / "checkpoint-4")
