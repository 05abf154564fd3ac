"""A fine-tune killed while saving a checkpoint resumes from the newest *complete* one."""

import json

from sparseft.prune import magnitude_prune, save_masks
from sparseft.settings import FinetuneSettings
from sparseft.stages import StageIO, run_finetune
from sparseft.train.trainer import COMPLETE_FILE, last_complete_checkpoint
from tiny_models import build_tiny_model, byte_tokenizer


def test_resume_skips_a_checkpoint_cut_short(tmp_path):
    model = build_tiny_model("llama", vocab_size=260)
    save_masks(magnitude_prune(model, 0.5), tmp_path / "student" / "masks.safetensors")
    model.save_pretrained(tmp_path / "student")
    byte_tokenizer().save_pretrained(tmp_path / "student")
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps({"text": f"{i} plus {i} is {2 * i}."}) for i in range(40)))
    settings = FinetuneSettings(teacher=None, loss={"task": 1, "squarehead": 0}, data=str(tmp_path / "data.jsonl"),
                                steps=4, save_steps=2, batch_size=2, seqlen=16, logging_steps=1)
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
