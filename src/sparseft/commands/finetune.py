"""`sparseft finetune`: sparse fine-tuning of a (pruned) student with a dense teacher, on the HF Trainer."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path

from sparseft.errors import ConfigError

log = logging.getLogger(__name__)

EPILOG = """examples:
  # recover a one-shot pruned model (masks from its folder) with CE + SquareHead from the dense teacher
  sparseft finetune --student runs/sgpt50 --teacher runs/dense-ft --data gsm --loss ce+squarehead \\
      --steps 300 --batch-size 8 --seqlen 256 --lr 1e-4 --out runs/sgpt50-sh
  # gradual magnitude pruning from dense to 70% over the first 200 steps, global ranking
  sparseft finetune --student runs/dense-ft --teacher runs/dense-ft --gmp 0.7 --gmp-end 200 --gmp-scheme global \\
      --out runs/gmp70
  # two processes (DDP, gloo on CPU); masks stay identical on both ranks
  torchrun --nproc_per_node 2 -m sparseft.cli finetune --student ... --out ...
  # the same with FSDP2: student and teacher sharded across the ranks (CPU/gloo or GPUs)
  torchrun --nproc_per_node 2 -m sparseft.cli finetune --fsdp --student ... --out ...

--data: 'gsm' (generated variants of the packaged GSM problems, never the 100 originals) or a file
(.jsonl with a "text" field per line, or .txt with texts separated by blank lines).
Masks: --masks FILE, else STUDENT/masks.safetensors, else the student's zero weights (none: dense).
Output: OUT/checkpoints/checkpoint-N (HF checkpoints + masks.safetensors; --resume continues the last),
OUT/final (model, tokenizer, masks, sparseft.json with the settings and the loss history)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="sparse fine-tuning with distillation from a dense teacher (SquareHead, KD) and/or GMP",
        description=(
            "Fine-tune a student while its pruned weights stay exactly zero: loss = CE + SquareHead "
            "(normalized per-block hidden-state MSE to the frozen teacher) + optional logit KD. Masks come "
            "from a one-shot pruned student or grow during training by gradual magnitude pruning (GMP)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = parser.add_argument_group("models and data")
    io.add_argument("--student", required=True, help="student model: folder, packaged name, .gguf or hub id")
    io.add_argument("--teacher", help="dense teacher model (needed by the squarehead and kd terms)")
    io.add_argument("--masks", help="masks.safetensors of the student (default: STUDENT/masks.safetensors)")
    io.add_argument("--data", default="gsm", help="'gsm' or a .jsonl/.txt file of training texts (default gsm)")
    io.add_argument("--num-texts", type=int, default=512, help="number of training texts to use (default 512)")
    io.add_argument("--seqlen", type=int, default=256, help="tokens per training example (default 256)")
    io.add_argument("--no-pack", action="store_true",
                    help="one padded example per text instead of packing texts into full windows")
    io.add_argument("--out", required=True, help="output folder (checkpoints/ and final/ go inside)")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--loss", default="ce+squarehead",
                      help="terms joined by '+': ce, squarehead, kd (default ce+squarehead, the paper's LLM setting)")
    loss.add_argument("--weight", action="append", default=[], metavar="TERM=W",
                      help="weight of a term, e.g. --weight squarehead=2 (default 1 for each named term)")
    loss.add_argument("--temperature", type=float, default=1.0, help="KD temperature (default 1)")
    loss.add_argument("--teacher-dtype", choices=["float32", "bfloat16"], default="float32",
                      help="run the frozen teacher in this dtype (bfloat16 halves its memory)")

    gmp = parser.add_argument_group("gradual magnitude pruning (optional)")
    gmp.add_argument("--gmp", type=float, metavar="FINAL", help="prune gradually to this sparsity (e.g. 0.7)")
    gmp.add_argument("--gmp-initial", type=float, default=0.0, help="sparsity at --gmp-start (default 0)")
    gmp.add_argument("--gmp-start", type=int, default=0, help="first pruning step (default 0)")
    gmp.add_argument("--gmp-end", type=int, help="step at which FINAL is reached (default 3/4 of --steps)")
    gmp.add_argument("--gmp-frequency", type=int, default=10, help="steps between mask updates (default 10)")
    gmp.add_argument("--gmp-scheme", choices=["uniform", "global"], default="uniform",
                     help="same sparsity in every layer, or one magnitude threshold across layers")

    opt = parser.add_argument_group("optimization")
    opt.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    opt.add_argument("--batch-size", type=int, default=8, help="examples per device per step (default 8)")
    opt.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    opt.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    opt.add_argument("--warmup", type=float, default=0.1, help="warmup fraction of the steps (default 0.1)")
    opt.add_argument("--weight-decay", type=float, default=0.0)
    opt.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the norm of the masked gradients")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--bf16", action="store_true", help="train the student in bf16 autocast")

    run_group = parser.add_argument_group("checkpoints and logging")
    run_group.add_argument("--save-steps", type=int, default=100, help="checkpoint every N steps (default 100)")
    run_group.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (default 2)")
    run_group.add_argument("--logging-steps", type=int, default=10)
    run_group.add_argument("--report-to", default=None,
                           help="HF Trainer loggers (default: tensorboard when installed, else none)")
    run_group.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    run_group.add_argument("--fsdp", action="store_true",
                           help="under torchrun/accelerate launch: shard student and teacher with FSDP2, one unit "
                                "per transformer block (also on CPU with gloo); default is DDP")
    parser.set_defaults(func=run)


def _weights(args: argparse.Namespace):
    from sparseft.train import DistillConfig

    settings = {"temperature": args.temperature}
    names = {"ce": "w_task", "task": "w_task", "kd": "w_kd", "squarehead": "w_sh", "sh": "w_sh"}
    for item in args.weight:
        term, _, value = item.partition("=")
        if term not in names or not value:
            raise ConfigError(f"--weight takes TERM=W with TERM in ce, kd, squarehead; got {item!r}")
        settings[names[term]] = float(value)
    return DistillConfig.from_terms(args.loss, **settings)


def _masks(args: argparse.Namespace, student):
    from sparseft.models import find_prunable
    from sparseft.prune import load_masks, masks_from_zeros

    if args.masks:
        return load_masks(args.masks)
    folder_masks = Path(args.student) / "masks.safetensors"
    if folder_masks.is_file():
        return load_masks(folder_masks)
    if args.gmp is not None:
        return None  # GMP starts from all-ones masks over the prunable layers
    masks = masks_from_zeros(student, find_prunable(student))
    if not any((~m).any() for m in masks.values()):
        log.warning("the student has no zero weights and no masks: this is dense fine-tuning")
    return masks


def _training_args(args: argparse.Namespace, student):
    from transformers import TrainingArguments

    from sparseft.train.fsdp import fsdp_config_for

    sharding = {"fsdp": True, "fsdp_config": fsdp_config_for(student)} if args.fsdp else {}
    report_to = args.report_to or ("tensorboard" if importlib.util.find_spec("tensorboard") else "none")
    return TrainingArguments(
        output_dir=str(Path(args.out) / "checkpoints"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, warmup_steps=int(args.warmup * args.steps),
        lr_scheduler_type="cosine", weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        save_strategy="steps", save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps, report_to=report_to, seed=args.seed, data_seed=args.seed, bf16=args.bf16,
        disable_tqdm=True, use_cpu=not _has_accelerator(), **sharding,
    )


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


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def run(args: argparse.Namespace) -> int:
    from sparseft.models import load_model, load_tokenizer
    from sparseft.models.loading import parse_dtype
    from sparseft.models.saving import save_model_folder
    from sparseft.prune import sparsity_report
    from sparseft.train import CausalLMTexts, GMPSchedule, SparseTrainer, pad_collate, read_texts

    distill = _weights(args)
    if distill.needs_teacher and not args.teacher:
        raise ConfigError(f"--loss {args.loss} needs --teacher (the dense model to distill from)")
    student = load_model(args.student)
    if getattr(student.config, "is_encoder_decoder", False):
        raise ConfigError("`sparseft finetune` trains causal LMs; use sparseft.train.SparseSeq2SeqTrainer for seq2seq")
    tokenizer = load_tokenizer(args.student)
    teacher = load_model(args.teacher) if distill.needs_teacher else None
    masks = _masks(args, student)
    gmp = None
    if args.gmp is not None:
        end = args.gmp_end if args.gmp_end is not None else int(0.75 * args.steps)
        gmp = GMPSchedule(args.gmp_initial, args.gmp, args.gmp_start, end, args.gmp_frequency, args.gmp_scheme)
    texts = read_texts(args.data, n=args.num_texts, seed=args.seed)
    dataset = CausalLMTexts(tokenizer, texts, seqlen=args.seqlen, pack=not args.no_pack)
    trainer = SparseTrainer(
        model=student, args=_training_args(args, student), train_dataset=dataset, teacher=teacher, masks=masks, gmp=gmp,
        distill=distill, teacher_dtype=parse_dtype(args.teacher_dtype) if teacher is not None else None,
        data_collator=pad_collate(tokenizer.pad_token_id),
    )
    result = trainer.train(resume_from_checkpoint=True if args.resume else None)
    student = _unsharded(trainer, args.student)
    if not trainer.is_world_process_zero():
        return 0
    masks = trainer.masks
    report = sparsity_report(student, list(masks)) if masks else None
    record = {
        "stage": "finetune", "student": str(args.student), "teacher": args.teacher, "data": args.data,
        "loss": {"w_task": distill.w_task, "w_kd": distill.w_kd, "w_sh": distill.w_sh, "temperature": distill.temperature},
        "steps": args.steps, "batch_size": args.batch_size, "seqlen": args.seqlen, "lr": args.lr,
        "train_seconds": result.metrics.get("train_runtime"), "total_sparsity": report.sparsity if report else 0.0,
        "log_history": trainer.state.log_history,
    }
    final = Path(args.out) / "final"
    save_model_folder(student, final, tokenizer=tokenizer, masks=masks or None, record=record)
    print(json.dumps({"out": str(final), "total_sparsity": round(record["total_sparsity"], 4),
                      "train_seconds": record["train_seconds"]}))
    return 0
