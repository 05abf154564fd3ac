"""SparseTrainer on tiny random models: masks hold, losses are logged, resume restores masks, NaN stops."""

from __future__ import annotations

import pytest
import torch
from train_helpers import RandomTokens, tiny_args
from transformers import Seq2SeqTrainingArguments, TrainerCallback

from sparseft.errors import ConfigError
from sparseft.prune import load_masks, magnitude_prune
from sparseft.train import (
    MASKS_FILE,
    DistillConfig,
    GMPSchedule,
    NonFiniteLossError,
    SparseSeq2SeqTrainer,
    SparseTrainer,
)
from tiny_models import build_tiny_model

torch.set_num_threads(1)


def _modules(model):
    return dict(model.named_modules())


def _assert_masked(model, masks):
    modules = _modules(model)
    for name, mask in masks.items():
        weight = modules[name].weight
        assert (weight[~mask] == 0).all(), name
        assert (weight[mask] != 0).all(), name  # nothing alive died either (random init has no exact zeros)


def _student_and_masks(seed=1, sparsity=0.5):
    student = build_tiny_model("llama", seed=seed)
    return student, magnitude_prune(student, sparsity)


def test_masks_hold_and_loss_components_are_logged(tmp_path):
    teacher = build_tiny_model("llama", seed=0)
    student, masks = _student_and_masks()
    before = {n: m.weight.detach().clone() for n, m in _modules(student).items() if n in masks}
    trainer = SparseTrainer(
        model=student, args=tiny_args(tmp_path, max_steps=4, max_grad_norm=0.5), train_dataset=RandomTokens(pad=5),
        teacher=teacher, masks=masks, distill=DistillConfig(w_task=1.0, w_kd=0.5, w_sh=2.0, temperature=2.0),
    )
    trainer.train()
    _assert_masked(student, masks)
    assert any(not torch.equal(before[n], _modules(student)[n].weight) for n in masks)  # it did train
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4
    for h in logs:
        assert h["loss_task"] > 0 and h["loss_kd"] > 0 and h["loss_squarehead"] > 0
        assert h["sparsity"] == pytest.approx(0.5, abs=1e-3)
        # the logged total is the weighted sum of the logged components
        assert h["loss"] == pytest.approx(h["loss_task"] + 0.5 * h["loss_kd"] + 2.0 * h["loss_squarehead"], rel=1e-4)
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_teacher_identical_to_student_gives_zero_distillation(tmp_path):
    student = build_tiny_model("llama", seed=0)
    teacher = build_tiny_model("llama", seed=0)
    trainer = SparseTrainer(model=student, args=tiny_args(tmp_path, max_steps=1, learning_rate=0.0),
                            train_dataset=RandomTokens(), teacher=teacher, distill=DistillConfig(1.0, 1.0, 1.0))
    trainer.train()
    h = trainer.state.log_history[0]
    assert h["loss_squarehead"] == pytest.approx(0.0, abs=1e-6) and h["loss_kd"] == pytest.approx(0.0, abs=1e-6)


def test_resume_restores_the_checkpoint_masks(tmp_path):
    student, masks = _student_and_masks()
    args = tiny_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    SparseTrainer(model=student, args=args, train_dataset=RandomTokens(), masks=masks).train()
    saved = load_masks(tmp_path / "checkpoint-2" / MASKS_FILE)
    assert set(saved) == set(masks) and all(torch.equal(saved[n], masks[n]) for n in masks)

    # A fresh run starting from *other* masks must come back to the checkpoint's masks on resume.
    other, other_masks = _student_and_masks(seed=7, sparsity=0.3)
    trainer = SparseTrainer(model=other, args=args, train_dataset=RandomTokens(), masks=other_masks)
    trainer.train(resume_from_checkpoint=True)  # picks checkpoint-4
    assert all(torch.equal(trainer.enforcer.masks[n], masks[n]) for n in masks)
    _assert_masked(other, masks)


def test_gmp_reaches_final_sparsity_and_masks_only_grow(tmp_path):
    student = build_tiny_model("llama", seed=1)
    gmp = GMPSchedule(0.2, 0.6, start_step=0, end_step=4, frequency=2, scheme="global")
    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append({n: m.clone() for n, m in trainer.enforcer.masks.items()})

    trainer = SparseTrainer(model=student, args=tiny_args(tmp_path, max_steps=6), train_dataset=RandomTokens(),
                            gmp=gmp, callbacks=[Record()])
    trainer.train()
    masks = trainer.enforcer.masks
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.6 * total)
    _assert_masked(student, masks)
    for earlier, later in zip(seen, seen[1:], strict=False):
        assert all(not (later[n] & ~earlier[n]).any() for n in masks)  # a pruned weight never comes back
    sparsities = [h["sparsity"] for h in trainer.state.log_history if "sparsity" in h]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.6, abs=1e-3)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    student, masks = _student_and_masks()
    poison = {"on": False}
    block = student.model.layers[0]
    block.register_forward_hook(lambda m, a, out: out * float("nan") if poison["on"] else None)

    class PoisonAtStep3(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            poison["on"] = state.global_step >= 2  # the third step's loss is NaN

    args = tiny_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    trainer = SparseTrainer(model=student, args=args, train_dataset=RandomTokens(), masks=masks,
                            callbacks=[PoisonAtStep3()])
    with pytest.raises(NonFiniteLossError, match="checkpoint-2"):
        trainer.train()
    assert (tmp_path / "checkpoint-2" / MASKS_FILE).is_file() and not (tmp_path / "checkpoint-4").exists()
    assert all(torch.isfinite(p).all() for p in student.parameters())  # no step was taken with NaN


def test_distillation_without_teacher_is_a_config_error(tmp_path):
    student, _ = _student_and_masks()
    with pytest.raises(ConfigError, match="teacher"):
        SparseTrainer(model=student, args=tiny_args(tmp_path), train_dataset=RandomTokens(),
                      distill=DistillConfig.from_terms("ce+squarehead"))
    assert DistillConfig.from_terms("ce+kd").w_kd == 1.0
    with pytest.raises(ConfigError):
        DistillConfig.from_terms("ce+mse")


class Seq2SeqTokens(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        labels = torch.randint(1, 128, (5,), generator=g)
        labels[-2:] = -100 if i % 2 else labels[-2:]
        return {"input_ids": torch.randint(1, 128, (7,), generator=g), "attention_mask": torch.ones(7, dtype=torch.long),
                "labels": labels, "decoder_input_ids": torch.cat([torch.zeros(1, dtype=torch.long), labels[:-1].clamp_min(0)])}


def test_seq2seq_trainer_on_t5_with_squarehead_over_both_stacks(tmp_path):
    teacher = build_tiny_model("t5", seed=0)
    student = build_tiny_model("t5", seed=1)
    masks = magnitude_prune(student, 0.5)
    trainer = SparseSeq2SeqTrainer(model=student, args=tiny_args(tmp_path, 2, Seq2SeqTrainingArguments),
                                   train_dataset=Seq2SeqTokens(),
                                   teacher=teacher, masks=masks, distill=DistillConfig(1.0, 1.0, 1.0))
    trainer.train()
    assert len(trainer.student_capture.blocks) == 4
    _assert_masked(student, masks)
    assert trainer.state.log_history[0]["loss_squarehead"] > 0


def test_gradients_are_masked_before_clipping(tmp_path):
    teacher = build_tiny_model("llama", seed=0)
    student, masks = _student_and_masks()
    trainer = SparseTrainer(model=student, args=tiny_args(tmp_path), train_dataset=RandomTokens(), teacher=teacher,
                            masks=masks, distill=DistillConfig(1.0, 0.0, 1.0))
    batch = torch.utils.data.default_collate([RandomTokens()[i] for i in range(2)])
    trainer.compute_loss(student, batch).backward()
    modules = _modules(student)
    for name, mask in masks.items():
        grad = modules[name].weight.grad
        assert (grad[~mask] == 0).all() and (grad[mask] != 0).any(), name
    # so the norm the Trainer clips is the norm of the live gradients only
    live = torch.cat([modules[n].weight.grad[m] for n, m in masks.items()])
    dead = torch.cat([modules[n].weight.grad[~m] for n, m in masks.items()])
    assert live.norm() > 0 and dead.norm() == 0


def test_gmp_resume_continues_from_the_checkpoint_masks(tmp_path):
    gmp = GMPSchedule(0.2, 0.6, start_step=0, end_step=4, frequency=2)
    args = tiny_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=3)
    first = SparseTrainer(model=build_tiny_model("llama", seed=1), args=args, train_dataset=RandomTokens(), gmp=gmp)
    first.train()
    final = {n: m.clone() for n, m in first.enforcer.masks.items()}
    at_3 = load_masks(tmp_path / "checkpoint-3" / MASKS_FILE)
    # resume from step 3 with a differently initialised model: its masks and weights come from the checkpoint
    second = SparseTrainer(model=build_tiny_model("llama", seed=9), args=args, train_dataset=RandomTokens(), gmp=gmp)
    assert not all(torch.equal(second.enforcer.masks[n], at_3[n]) for n in at_3)
    second.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    masks = second.enforcer.masks
    _assert_masked(second.model, masks)
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == pytest.approx(0.6 * total, abs=len(masks))
    # same data order and weights after resume, so the later GMP update ranks the same weights
    assert all(torch.equal(masks[n], final[n]) for n in final)
    assert all(not (masks[n] & ~at_3[n]).any() for n in at_3)  # grew from the checkpoint's masks


def test_gmp_pruned_weights_stay_zero_right_after_every_optimizer_step(tmp_path):
    """GMP prunes weights that AdamW's momentum still pushes; the optimizer's post-step hook re-zeros them.

    Checked in a callback that runs before the trainer's own `MaskCallback` (user callbacks come first), so
    the end-of-step re-application of GMP cannot hide a missing post-step hook.
    """
    student = build_tiny_model("llama", seed=1)
    gmp = GMPSchedule(0.3, 0.6, start_step=2, end_step=4, frequency=1)  # two dense steps build momentum
    checked = []

    class CheckAfterStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            modules = _modules(trainer.model)
            revived = sum(int((modules[n].weight[~m] != 0).sum()) for n, m in trainer.enforcer.masks.items())
            pruned = sum(int((~m).sum()) for m in trainer.enforcer.masks.values())
            checked.append((state.global_step, pruned, revived))

    trainer = SparseTrainer(model=student, args=tiny_args(tmp_path, max_steps=6, weight_decay=0.0),
                            train_dataset=RandomTokens(), gmp=gmp, callbacks=[CheckAfterStep()])
    trainer.train()
    assert [step for step, _, _ in checked] == list(range(1, 7))
    assert all(pruned > 0 for step, pruned, _ in checked if step > 2)  # masks in force from step 2 on
    assert all(revived == 0 for _, _, revived in checked), checked
