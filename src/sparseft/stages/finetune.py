"""The finetune stage: sparse fine-tuning of a (pruned) student with a frozen dense teacher.

Loss = task CE + SquareHead + logit KD (weights from `settings.loss`); masks come from `settings.masks`,
else the input folder's masks file, else its zero weights, else (with `gmp`) grow on the GMP schedule.
The model is written to `io.output`; HF checkpoints (with masks) to `OUTPUT.checkpoints/`, from which
`io.resume` continues. Runs under torchrun/accelerate (DDP, or FSDP2 with `fsdp: true`).

    >>> record = run_finetune(FinetuneSettings(steps=100), StageIO("runs/sgpt50", Path("runs/sgpt50-sh"),
    ...                                                             source="smollm2-135m"))
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from sparseft.errors import ConfigError
from sparseft.settings import FinetuneSettings
from sparseft.stages.common import StageIO, input_masks, load_input, require_tokenizer, stage_record

log = logging.getLogger(__name__)


def checkpoints_dir(output: Path) -> Path:
    """Where the HF checkpoints of a fine-tune writing `output` go: beside it, so the output can be
    replaced atomically at the end while the checkpoints survive an interrupted run."""
    return output.with_name(output.name + ".checkpoints")


def _teacher_ref(settings: FinetuneSettings, io: StageIO) -> str | None:
    if not settings.needs_teacher:
        return None
    if settings.teacher is None:
        raise ConfigError("the squarehead and kd loss terms need a teacher (the dense model to distill from)")
    return io.origin if settings.teacher == "source" else settings.teacher


def _masks(settings: FinetuneSettings, io: StageIO, student):
    from sparseft.models import find_prunable
    from sparseft.prune import masks_from_zeros

    masks = input_masks(io, settings.masks)
    if masks is not None or settings.gmp is not None:
        return masks  # GMP without given masks starts from all-ones masks over the prunable layers
    masks = masks_from_zeros(student, find_prunable(student))
    if not any((~m).any() for m in masks.values()):
        log.warning("the student has no zero weights and no masks: this is dense fine-tuning")
    return masks


def _freeze(settings: FinetuneSettings, student) -> None:
    """Keep the parameters `settings.freeze` names out of training; a pattern set that names none is an error."""
    from sparseft.models import freeze_parameters

    if not settings.freeze:
        return
    frozen = freeze_parameters(student, settings.freeze)
    if frozen == 0:
        raise ConfigError(f"freeze {settings.freeze} matches no parameter of the student (names look like "
                          f"{next(n for n, _ in student.named_parameters())!r})")
    total = sum(p.numel() for p in student.parameters())
    log.info("frozen: %d of %d parameters (%.1f%%)", frozen, total, 100 * frozen / total)


def _gmp(settings: FinetuneSettings, student, tokenizer, io: StageIO, sources: list[str]):
    from sparseft.train import GMPSchedule

    g = settings.gmp
    if g is None:
        return None
    end = g.end_step if g.end_step is not None else max(1, int(0.75 * settings.steps))
    share = _owl_share(settings, student, tokenizer, io, sources) if g.scheme == "owl" else None
    return GMPSchedule(g.init_sparsity, g.final_sparsity, g.start_step, end, g.frequency, g.scheme, share)


def _owl_share(settings: FinetuneSettings, student, tokenizer, io: StageIO, sources: list[str]) -> dict[str, float]:
    """Each layer's OWL final sparsity over the target, measured on the dense student before training."""
    from sparseft.models import find_prunable
    from sparseft.prune.allocation import Allocation, owl_layer_sparsities
    from sparseft.settings import Calibration
    from sparseft.stages.oneshot import calibration_batches_for

    final = settings.gmp.final_sparsity
    calib = Calibration(source=sources, nsamples=32, seqlen=min(settings.seqlen, 512), seed=settings.seed)
    batches = calibration_batches_for(student, tokenizer, calib, io)
    targets = owl_layer_sparsities(student, batches, find_prunable(student), final,
                                   Allocation("owl", lam=settings.gmp.owl_lambda))
    log.info("GMP owl: per-layer final sparsity %.3f..%.3f (mean %.3f)", min(targets.values()), max(targets.values()), final)
    return {name: s / final for name, s in targets.items()} if final > 0 else {n: 1.0 for n in targets}


def training_arguments(settings: FinetuneSettings, checkpoints: Path, student):
    """The HF TrainingArguments of a fine-tune (the one place they are built)."""
    import torch
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    from sparseft.train.fsdp import fsdp_config_for

    steps = settings.steps
    sharding = {"fsdp": True, "fsdp_config": fsdp_config_for(student)} if settings.fsdp else {}
    report_to = settings.report_to or ("tensorboard" if importlib.util.find_spec("tensorboard") else "none")
    # The seq2seq trainer reads its generation settings from Seq2SeqTrainingArguments.
    arguments = Seq2SeqTrainingArguments if getattr(student.config, "is_encoder_decoder", False) else TrainingArguments
    return arguments(
        output_dir=str(checkpoints), max_steps=steps, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, learning_rate=settings.learning_rate,
        warmup_steps=int(settings.warmup * steps), lr_scheduler_type="cosine", weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm, save_strategy="steps", save_steps=settings.save_steps or max(1, steps // 4),
        save_total_limit=settings.save_total_limit, logging_steps=settings.logging_steps or max(1, steps // 20),
        report_to=report_to, seed=settings.seed, data_seed=settings.seed, bf16=settings.bf16,
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), **sharding,
    )  # fmt: skip


def _unsharded(trainer, source: str):
    """The trained student as a plain model: FSDP's shards are gathered on every rank (a collective)."""
    from sparseft.models import load_model
    from sparseft.train.fsdp import full_state_dict, model_is_sharded

    trained = trainer.accelerator.unwrap_model(trainer.model)
    if not model_is_sharded(trained):
        return trained
    state = full_state_dict(trained)
    if not trainer.is_world_process_zero():
        return None
    plain = load_model(source)
    plain.load_state_dict(state)
    plain.config.use_cache = trained.config.use_cache
    return plain


#: Settings a resumed run may change: how often it saves, logs and scores, and how long it goes on.
_RESUMABLE_CHANGES = ("steps", "save_steps", "save_total_limit", "logging_steps", "report_to", "eval_steps", "eval_data",
                      "eval_texts")


def run_id(settings: FinetuneSettings, io: StageIO) -> str:
    """What identifies a fine-tune for `--resume`: its input and the settings that shape training."""
    import hashlib
    import json

    shaping = settings.model_dump(mode="json", exclude=set(_RESUMABLE_CHANGES))
    text = json.dumps({"input": str(io.input), "settings": shaping}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resume_point(checkpoints: Path, resume: bool, identity: str) -> str | None:
    from sparseft.train.trainer import last_complete_checkpoint

    last = last_complete_checkpoint(checkpoints, identity) if resume else None
    if resume and last is None:
        log.info("no checkpoint in %s: starting from the beginning", checkpoints)
    return last


def _training_data(settings: FinetuneSettings, task, student, tokenizer) -> tuple[list[str], object, object]:
    """(sources, dataset, collator) of the train split, for the student's kind (`sparseft.stages.tasks`)."""
    from sparseft.stages.tasks import default_sources, training_data

    sources = default_sources(settings, "data", task, task.train)
    dataset, collate = training_data(task, student, tokenizer, sources, settings.nsamples, settings.seqlen,
                                     settings.seed, pack=settings.pack, augment=settings.augment)
    return sources, dataset, collate


def _heldout_callback(settings: FinetuneSettings, task, tokenizer):
    """With `eval_steps`: the callback that scores the training model on the test split of `eval_data`."""
    from sparseft.models.loading import max_positions
    from sparseft.stages.tasks import check_sources, default_sources, evaluate_source
    from sparseft.train.heldout import HeldOutCallback

    if settings.eval_steps is None:
        return None
    sources = default_sources(settings, "eval_data", task, task.test)
    check_sources(task, sources, "test")  # before training starts, not at its first evaluation

    def evaluate(model) -> dict[str, float]:
        seqlen = min(512, max_positions(model.config) or 512)  # `sparseft eval`'s windows where the model has room
        return {s: evaluate_source(task, model, tokenizer, s, max_items=settings.eval_texts, max_new_tokens=200,
                                   seqlen=seqlen)[task.metric] for s in sources}

    return HeldOutCallback(evaluate, settings.eval_steps)


def run_finetune(settings: FinetuneSettings, io: StageIO) -> dict:
    """Fine-tune `io.input` sparse; write the model, masks and record (loss history) to `io.output`."""
    from sparseft.models import load_model
    from sparseft.models.loading import parse_dtype
    from sparseft.models.saving import save_model_folder
    from sparseft.prune import sparsity_report
    from sparseft.stages.tasks import task_of
    from sparseft.train import DistillConfig, SparseSeq2SeqTrainer, SparseTrainer

    out = io.require_output("finetune")
    teacher_ref = _teacher_ref(settings, io)
    student, tokenizer = load_input(io)
    task = task_of(student)
    tokenizer = require_tokenizer(tokenizer, io, "fine-tuning")
    sources, dataset, collate = _training_data(settings, task, student, tokenizer)
    _freeze(settings, student)
    loss = settings.loss
    distill = DistillConfig(w_task=loss.task, w_kd=loss.kd, w_sh=loss.squarehead, temperature=loss.temperature,
                             squarehead_normalize=loss.squarehead_normalize)
    teacher = load_model(teacher_ref, io.dtype) if teacher_ref else None
    checkpoints = checkpoints_dir(out)
    identity = run_id(settings, io)
    trainer_class = SparseTrainer if task.kind == "causal" else SparseSeq2SeqTrainer  # encoder + decoder blocks
    trainer = trainer_class(
        model=student, args=training_arguments(settings, checkpoints, student), train_dataset=dataset,
        teacher=teacher, masks=_masks(settings, io, student), gmp=_gmp(settings, student, tokenizer, io, sources),
        distill=distill, teacher_dtype=parse_dtype(settings.teacher_dtype) if teacher else None, data_collator=collate,
        run_id=identity,
    )  # fmt: skip
    heldout = _heldout_callback(settings, task, tokenizer)
    if heldout is not None:
        trainer.add_callback(heldout)
    resume_from = _resume_point(checkpoints, io.resume, identity)
    result = trainer.train(resume_from_checkpoint=resume_from)
    student = _unsharded(trainer, io.input)
    masks = trainer.masks
    report = sparsity_report(student, list(masks)) if student is not None and masks else None
    record = stage_record(
        "finetune", settings, io, teacher_model=teacher_ref, resumed_from=resume_from, data=sources,
        examples=len(dataset),
        train_seconds=result.metrics.get("train_runtime"), total_sparsity=report.sparsity if report else 0.0,
        log_history=trainer.state.log_history,
    )  # fmt: skip
    if trainer.is_world_process_zero():
        save_model_folder(student, out, tokenizer=tokenizer, masks=masks or None, record=record,
                          overwrite=io.overwrite)
    return record
