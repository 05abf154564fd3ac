"""`SparseTrainer`: the HF Trainer with a frozen dense teacher, SquareHead/KD losses, and enforced masks.

Everything the HF Trainer does (logging, checkpoints, LR schedules, accelerate/torchrun DDP) still
applies; this adds:
- loss = w_task * CE + w_kd * KD + w_sh * SquareHead, each component logged on its own
  (`loss_task`, `loss_kd`, `loss_squarehead`, unweighted) next to the total `loss`;
- a teacher that is frozen (no grad, eval mode, optionally bf16) and runs on the same inputs;
- masks enforced on every step: a gradient hook zeroes pruned gradients *before* the Trainer clips them
  (so clipping sees only live weights, and DDP all-reduces masked gradients), and a post-step hook on
  the optimizer re-applies the masks;
- gradual magnitude pruning (`gmp=GMPSchedule(...)`) or constant masks (a one-shot pruned student);
- masks written into every checkpoint folder and restored by `train(resume_from_checkpoint=...)`;
- a NaN/inf loss raises `NonFiniteLossError` before any optimizer step, so the weights in memory and
  the last checkpoint on disk are the last good ones.

>>> trainer = SparseTrainer(
...     model=student, args=TrainingArguments("run", max_steps=200, save_steps=50),
...     train_dataset=CausalLMTexts(tokenizer, texts, seqlen=256),
...     teacher=teacher, masks=masks_from_zeros(student, find_prunable(student)),
...     distill=DistillConfig(w_task=1.0, w_kd=0.0, w_sh=1.0),
... )
>>> trainer.train()
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from transformers import Seq2SeqTrainer, Trainer, TrainerCallback, TrainerState

from sparseft.atomic import atomic_write_text
from sparseft.distill.capture import HiddenStateCapture, layer_masks
from sparseft.distill.kd import kd_loss
from sparseft.distill.squarehead import EPS, squarehead_loss
from sparseft.errors import CheckpointError, ConfigError, SparseftError
from sparseft.models.layers import out_in_shape
from sparseft.models.mask_io import Masks, load_masks, save_masks
from sparseft.models.walk import find_prunable
from sparseft.prune.masks import MaskEnforcer
from sparseft.train.fsdp import enable_fsdp_on_cpu, model_is_sharded, shard_like, shard_teacher
from sparseft.train.gmp import GMPSchedule, gmp_masks

log = logging.getLogger(__name__)

MASKS_FILE = "masks.safetensors"
COMPLETE_FILE = "sparseft-complete.json"
COMPONENTS = ("task", "kd", "squarehead")


class NonFiniteLossError(SparseftError):
    """The training loss became NaN or inf; no optimizer step was taken with it."""


@dataclass(frozen=True)
class DistillConfig:
    """Weights of the loss terms (paper default for LLMs: task 1, KD 0, SquareHead 1) and their settings."""

    w_task: float = 1.0
    w_kd: float = 0.0
    w_sh: float = 1.0
    temperature: float = 1.0
    eps: float = EPS
    squarehead_normalize: str = "token"  # "token" or "layer": see sparseft.distill.squarehead

    def __post_init__(self) -> None:
        if min(self.w_task, self.w_kd, self.w_sh) < 0 or self.w_task + self.w_kd + self.w_sh == 0:
            raise ConfigError(f"loss weights must be >= 0 and not all 0, got {self}")

    @property
    def needs_teacher(self) -> bool:
        return self.w_kd > 0 or self.w_sh > 0

    @classmethod
    def from_terms(cls, terms: str, **settings: Any) -> DistillConfig:
        """'ce+squarehead' -> weights 1 for the named terms, 0 for the others."""
        names = {t.strip().lower() for t in terms.split("+") if t.strip()}
        aliases = {"ce": "w_task", "task": "w_task", "kd": "w_kd", "squarehead": "w_sh", "sh": "w_sh"}
        unknown = names - set(aliases)
        if unknown or not names:
            raise ConfigError(f"--loss takes terms joined by '+' from ce, kd, squarehead; got {terms!r}")
        weights = {"w_task": 0.0, "w_kd": 0.0, "w_sh": 0.0}
        weights.update({aliases[n]: 1.0 for n in names})
        return cls(**{**weights, **settings})


def _all_true(layers: dict[str, nn.Module]) -> Masks:
    return {name: torch.ones(out_in_shape(m), dtype=torch.bool, device=m.weight.device) for name, m in layers.items()}


def _mask_sparsity(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int((~m).sum()) for m in masks.values()) / total if total else 0.0


class MaskCallback(TrainerCallback):
    """Re-applies masks when training starts, runs the GMP schedule, and saves masks with checkpoints.

    Each checkpoint's completion marker names the run that wrote it (`run_id`: its input and settings), so
    a `--resume` never continues another run's checkpoint left in the same folder."""

    def __init__(self, trainer: SparseTrainerMixin, run_id: str | None = None):
        self.trainer = trainer
        self.run_id = run_id

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.update_masks(state.global_step)
        if state.is_world_process_zero:
            _unmark_later_checkpoints(Path(args.output_dir), state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.update_masks(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            save_masks(self.trainer.masks, folder / MASKS_FILE)
            # Last, after HF's files and the masks: a checkpoint without it was cut short (kill -9).
            atomic_write_text(folder / COMPLETE_FILE, json.dumps({"step": state.global_step, "run": self.run_id}))


def _checkpoint_steps(folder: Path) -> list[tuple[int, Path]]:
    return sorted(((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit()), reverse=True)


def _unmark_later_checkpoints(folder: Path, step: int) -> None:
    """Drop the completion marker of checkpoints after `step`: they are of an earlier trajectory (another
    run, or this one started afresh) and this run overwrites them, so a kill during that must not leave
    a half-new folder marked complete."""
    if folder.is_dir():
        for later, path in _checkpoint_steps(folder):
            if later > step:
                (path / COMPLETE_FILE).unlink(missing_ok=True)


def last_complete_checkpoint(output_dir: str | Path, run_id: str | None = None) -> str | None:
    """The newest `checkpoint-N` of `output_dir` that was written to the end (has `COMPLETE_FILE`), or None;
    with `run_id`, only one that run wrote (another run's checkpoints are skipped)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    for _, path in _checkpoint_steps(folder):
        marker = path / COMPLETE_FILE
        if not marker.is_file():
            log.warning("%s is incomplete (the run was killed while saving it): skipped", path)
        elif run_id is not None and json.loads(marker.read_text()).get("run") != run_id:
            log.warning("%s is of another run (other input or settings): skipped", path)
        else:
            return str(path)
    return None


class SparseTrainerMixin:
    """The sparse/distillation behaviour, shared by `SparseTrainer` and `SparseSeq2SeqTrainer`."""

    def __init__(
        self,
        *args: Any,
        teacher: nn.Module | None = None,
        masks: Masks | None = None,
        distill: DistillConfig | None = None,
        gmp: GMPSchedule | None = None,
        teacher_dtype: torch.dtype | None = None,
        run_id: str | None = None,
        **kwargs: Any,
    ):
        # The HF Trainer sets config.use_cache = args.use_cache (False) in __init__; remember the model's own
        # value first so the saved model generates with its KV cache.
        model = kwargs.get("model", args[0] if args else None)
        use_cache = getattr(getattr(model, "config", None), "use_cache", None)
        super().__init__(*args, **kwargs)
        self.distill = distill or DistillConfig(w_task=1.0, w_kd=0.0, w_sh=0.0)
        if self.distill.needs_teacher and teacher is None:
            raise ConfigError("KD and SquareHead need a dense teacher model (pass teacher=...)")
        # compute_loss returns per-batch means, so the Trainer must divide by accumulation steps itself.
        self.loss_is_scaled_for_ga = False
        self.is_encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        self._use_cache = use_cache
        self.model.config.use_cache = use_cache
        self.teacher = self._freeze_teacher(teacher, teacher_dtype) if self.distill.needs_teacher else None
        self.student_capture = HiddenStateCapture(self.model) if self.distill.w_sh > 0 else None
        self.teacher_capture = HiddenStateCapture(self.teacher) if self.distill.w_sh > 0 else None
        self.gmp = gmp
        if masks is None:
            masks = _all_true(find_prunable(self.model)) if gmp is not None else {}
        # `masks` ((out, in), full tensors) are the pruning state that is saved; the enforcer lays them out
        # like the parameters, which FSDP replaces with sharded ones when training starts.
        self.enforcer = MaskEnforcer(self.model, masks)
        self.masks = self.enforcer.masks
        self._enforcer_sharded = False
        self._gmp_layers = {n: m for n, m in self.model.named_modules() if n in masks}
        self._gmp_applied: float | None = None
        self._optimizer_attached: torch.optim.Optimizer | None = None
        self._component_sums = torch.zeros(len(COMPONENTS), dtype=torch.float64)
        self._component_count = 0
        self.add_callback(MaskCallback(self, run_id))

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        enable_fsdp_on_cpu(self)

    # ----- teacher -------------------------------------------------------------------------------------
    def _freeze_teacher(self, teacher: nn.Module, dtype: torch.dtype | None) -> nn.Module:
        teacher = teacher.to(self.args.device, dtype=dtype) if dtype else teacher.to(self.args.device)
        teacher.requires_grad_(False)
        teacher.config.use_cache = False
        if self.is_fsdp_enabled:
            shard_teacher(teacher)  # the teacher is as large as the student: shard it too
        return teacher.eval()

    def _teacher_forward(self, inputs: dict[str, Any]) -> Any:
        teacher_inputs = dict(inputs)
        if not self.is_encoder_decoder:
            teacher_inputs.pop("labels", None)  # the teacher's CE is never used
        # Without KD the logits are unused: run only the base model (skips the large vocab projection).
        runner = self.teacher
        if self.distill.w_kd == 0 and not self.is_encoder_decoder and self.teacher.base_model is not self.teacher:
            runner = self.teacher.base_model
        self.teacher.eval()  # the Trainer may have called .train() on everything it saw
        with torch.no_grad():
            if self.teacher_capture is None:
                return runner(**teacher_inputs)
            with self.teacher_capture.recording():
                return runner(**teacher_inputs)

    # ----- masks and GMP -------------------------------------------------------------------------------
    def create_optimizer(self, *args: Any, **kwargs: Any):
        optimizer = super().create_optimizer(*args, **kwargs)
        self._follow_sharding()
        if self._optimizer_attached is not optimizer:
            # Through the trainer, not the enforcer: FSDP may swap the enforcer for a sharded one later,
            # and loading a sharded optimizer state already runs a step.
            optimizer.register_step_post_hook(lambda *_: self._reapply_masks())
            self._optimizer_attached = optimizer
        return optimizer

    def _follow_sharding(self) -> None:
        """Once FSDP has replaced the parameters with sharded ones, rebind the enforcer to them."""
        if not self.masks or self._enforcer_sharded or not model_is_sharded(self.model):
            return
        self._enforcer_sharded = True
        self.enforcer.remove()
        self.enforcer = MaskEnforcer(self.model, self.masks, place=shard_like)

    @torch.no_grad()
    def _reapply_masks(self) -> None:
        self._follow_sharding()
        self.enforcer.reapply()

    def _set_mask(self, name: str, mask: Tensor) -> None:
        self.enforcer.update(name, mask)  # in place: the gradient hooks hold these very tensors

    @torch.no_grad()
    def update_masks(self, step: int) -> None:
        """Bring masks to the GMP target of `step` (no-op without GMP or between updates); re-apply them."""
        self._follow_sharding()
        target = self.gmp.target_at(step) if self.gmp else None
        if target is not None and target != self._gmp_applied:
            for name, mask in gmp_masks(self._gmp_layers, target, self.gmp.scheme, self.gmp.layer_share).items():
                self._set_mask(name, mask)
            self._gmp_applied = target
            log.info("GMP step %d: sparsity %.4f", step, target)
        self.enforcer.reapply()

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """HF `train`; on resume, the checkpoint's masks replace the current ones before training goes on."""
        if resume_from_checkpoint:
            if resume_from_checkpoint is True:
                resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is None:
                    raise CheckpointError(f"no complete checkpoint to resume from in {self.args.output_dir}")
            self._restore_masks(Path(resume_from_checkpoint) / MASKS_FILE)
            if self.gmp:
                # The restored masks already have the schedule's sparsity at the checkpoint's step; marking it
                # applied keeps GMP from re-ranking weights before the checkpoint's weights are loaded.
                state = TrainerState.load_from_json(str(Path(resume_from_checkpoint) / "trainer_state.json"))
                self._gmp_applied = self.gmp.target_at(state.global_step)
        # No KV cache while training (it would only cost memory); generation afterwards gets it back.
        self.model.config.use_cache = False
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self.model.config.use_cache = self._use_cache

    def _restore_masks(self, path: Path) -> None:
        saved = load_masks(path)
        if set(saved) != set(self.masks):
            raise CheckpointError(f"{path} masks other layers than this run prunes")
        for name, mask in saved.items():
            self._set_mask(name, mask)
        self.enforcer.reapply()

    # ----- loss ----------------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any):
        cfg = self.distill
        if self.student_capture is not None:
            with self.student_capture.recording():
                outputs = model(**inputs)
        else:
            outputs = model(**inputs)
        zero = outputs.logits.new_zeros((), dtype=torch.float32)
        task = outputs.loss.float() if cfg.w_task > 0 else zero
        kd = sh = zero
        if self.teacher is not None:
            teacher_out = self._teacher_forward(inputs)
            if cfg.w_kd > 0:
                kd = kd_loss(outputs.logits, teacher_out.logits, inputs.get("labels"), cfg.temperature,
                             shift=not self.is_encoder_decoder)
            if cfg.w_sh > 0:
                sh = self._squarehead(inputs)
        total = cfg.w_task * task + cfg.w_kd * kd + cfg.w_sh * sh
        self._check_finite(total)
        if model.training:
            self._component_sums += torch.tensor([float(task.detach()), float(kd.detach()), float(sh.detach())], dtype=torch.float64)
            self._component_count += 1
        return (total, outputs) if return_outputs else total

    def _squarehead(self, inputs: dict[str, Any]) -> Tensor:
        student = self.student_capture.ordered()
        teacher = self.teacher_capture.ordered()
        masks = layer_masks(self.student_capture.blocks, inputs, self.is_encoder_decoder)
        loss = squarehead_loss(student, teacher, masks, self.distill.eps, self.distill.squarehead_normalize)
        self.student_capture.clear()
        self.teacher_capture.clear()  # the teacher's activations are not needed past this point
        return loss

    def _check_finite(self, loss: Tensor) -> None:
        finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if dist.is_available() and dist.is_initialized():
            # Every rank must stop together, or the others would hang in the next all-reduce.
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            last = last_complete_checkpoint(self.args.output_dir)
            raise NonFiniteLossError(
                f"loss is {float(loss.detach())} at step {self.state.global_step}; stopped before the optimizer step. "
                f"Last good checkpoint: {last or 'none saved yet'}. Lower the learning rate or check the data."
            )

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._component_count:
            means = self._component_sums / self._component_count
            if self.args.world_size > 1 and dist.is_initialized():
                means = means.to(self.args.device)
                dist.all_reduce(means)
                means = means.cpu() / self.args.world_size
            for name, value in zip(COMPONENTS, means.tolist(), strict=True):
                logs[f"loss_{name}"] = round(value, 6)
            logs["sparsity"] = round(_mask_sparsity(self.masks), 4)
            self._component_sums.zero_()
            self._component_count = 0
        super().log(logs, *args, **kwargs)


class SparseTrainer(SparseTrainerMixin, Trainer):
    """HF `Trainer` for causal LMs with teacher distillation and masks; see the module docstring."""


class SparseSeq2SeqTrainer(SparseTrainerMixin, Seq2SeqTrainer):
    """HF `Seq2SeqTrainer` (T5, Whisper, ...) with the same additions; SquareHead covers both stacks."""

