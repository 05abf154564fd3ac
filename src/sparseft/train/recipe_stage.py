"""The `finetune` stage of a recipe: sparse fine-tuning of the previous stage's model with `SparseTrainer`.

```yaml
  - finetune:
      teacher: source             # the recipe's dense model (or a model folder)
      data: gsm
      steps: 100
      loss: {task: 1.0, kd: 0.0, squarehead: 1.0}
      gmp: {init_sparsity: 0.0, final_sparsity: 0.7, end_step: 80}   # optional; else masks stay fixed
```

Masks come from the input folder's masks.safetensors (a pruning stage wrote them), else from its zero weights,
else (with `gmp`) from the schedule. Checkpoints go to `<output>.checkpoints/` beside the stage folder, so an
interrupted stage resumes from its last checkpoint (with its masks) when the recipe is run again.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from sparseft.models import find_prunable, load_model, load_tokenizer
from sparseft.models.saving import MASKS_FILE, save_model_folder
from sparseft.prune import load_masks, masks_from_zeros, sparsity_report
from sparseft.train.data import CausalLMTexts, pad_collate, read_texts
from sparseft.train.gmp import GMPSchedule
from sparseft.train.trainer import DistillConfig, SparseTrainer

log = logging.getLogger(__name__)


def _masks(folder: Path, student, use_gmp: bool):
    if (folder / MASKS_FILE).is_file():
        return load_masks(folder / MASKS_FILE)
    if use_gmp:
        return None  # GMP starts from all-ones masks
    return masks_from_zeros(student, find_prunable(student))


def _training_args(checkpoints: Path, settings) -> TrainingArguments:
    import torch

    report_to = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    return TrainingArguments(
        output_dir=str(checkpoints), max_steps=settings.steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, lr_scheduler_type="cosine", warmup_steps=settings.steps // 10,
        weight_decay=0.0, max_grad_norm=1.0, logging_steps=max(1, settings.steps // 20), save_strategy="steps",
        save_steps=max(1, settings.steps // 4), save_total_limit=2, report_to=report_to, seed=0, data_seed=0,
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
    )


def finetune_stage(ctx, settings) -> dict:
    """Run the stage: `ctx` (StageContext: recipe, source, input, output), `settings` (recipe FinetuneStage)."""
    student = load_model(ctx.input, ctx.recipe.dtype)
    tokenizer = load_tokenizer(ctx.input, missing_ok=True) or load_tokenizer(ctx.source, missing_ok=True)
    loss = settings.loss
    distill = DistillConfig(w_task=loss.task, w_kd=loss.kd, w_sh=loss.squarehead)
    teacher_ref = ctx.source if settings.teacher == "source" else settings.teacher
    teacher = load_model(teacher_ref, ctx.recipe.dtype) if distill.needs_teacher else None
    g = settings.gmp
    gmp = GMPSchedule(g.init_sparsity, g.final_sparsity, g.start_step, g.end_step, g.frequency, g.scheme) if g else None
    masks = _masks(Path(ctx.input), student, gmp is not None)
    dataset = CausalLMTexts(tokenizer, read_texts(settings.data, n=settings.nsamples), seqlen=settings.seqlen)
    checkpoints = Path(ctx.output).with_name(Path(ctx.output).name + ".checkpoints")
    trainer = SparseTrainer(
        model=student, args=_training_args(checkpoints, settings), train_dataset=dataset, teacher=teacher,
        masks=masks, gmp=gmp, distill=distill, data_collator=pad_collate(tokenizer.pad_token_id),
    )
    resume = checkpoints.is_dir() and get_last_checkpoint(str(checkpoints)) is not None
    if resume:
        log.info("resuming finetune from %s", get_last_checkpoint(str(checkpoints)))
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    masks = trainer.enforcer.masks
    record = {
        "stage": "finetune", **settings.model_dump(), "teacher_model": str(teacher_ref) if teacher else None,
        "train_seconds": result.metrics.get("train_runtime"), "resumed": resume,
        **(sparsity_report(student, list(masks)).as_dict() if masks else {"total_sparsity": 0.0}),
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        save_model_folder(student, ctx.output, tokenizer=tokenizer, masks=masks or None, record=record)
    return record
