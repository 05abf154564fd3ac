"""SquareHead alone really trains the student toward the teacher's hidden states (the gradient path works),
in fp32 and under bf16 autocast with a bf16 teacher, with either normalization."""

from __future__ import annotations

import copy

import pytest
import torch
from train_helpers import RandomTokens, tiny_args

from sparseft.distill import HiddenStateCapture, squarehead_loss
from sparseft.prune import magnitude_prune
from sparseft.train import DistillConfig, SparseTrainer
from tiny_models import build_tiny_model


def _sh(student, teacher, batch, normalize):
    """SquareHead between the two models on `batch`, computed apart from the trainer."""
    caps = HiddenStateCapture(student), HiddenStateCapture(teacher)
    with torch.no_grad(), caps[0].recording(), caps[1].recording():
        student(**batch)
        teacher(**batch)
        loss = squarehead_loss(caps[0].ordered(), caps[1].ordered(), batch["attention_mask"], normalize=normalize)
    for c in caps:
        c.remove()
    return float(loss)


@pytest.mark.parametrize("normalize, bf16", [("token", False), ("layer", False), ("token", True)])
def test_squarehead_only_pulls_the_student_to_the_teacher(tmp_path, normalize, bf16):
    teacher = build_tiny_model("llama", seed=0).eval()
    student = copy.deepcopy(teacher)
    masks = magnitude_prune(student, 0.6)
    data = RandomTokens(n=16)
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in ("input_ids", "attention_mask")}
    before = _sh(student, teacher, batch, normalize)
    trainer = SparseTrainer(
        model=student, args=tiny_args(tmp_path, max_steps=30, learning_rate=3e-3, weight_decay=0.0, bf16=bf16),
        train_dataset=data, teacher=teacher, masks=masks, teacher_dtype=torch.bfloat16 if bf16 else None,
        distill=DistillConfig(w_task=0.0, w_kd=0.0, w_sh=1.0, squarehead_normalize=normalize),
    )  # fmt: skip
    trainer.train()
    after = _sh(student.float().eval(), teacher.float(), batch, normalize)
    assert before > 0.01  # pruning 60% by magnitude really moved the states
    assert after < 0.5 * before, (before, after)
    for name, module in student.named_modules():  # and the masks held throughout
        if name in masks:
            assert (module.weight[~masks[name]] == 0).all()
