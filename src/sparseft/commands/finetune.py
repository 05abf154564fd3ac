"""`sparseft finetune`: sparse fine-tuning of a (pruned) student with a dense teacher, on the HF Trainer."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from sparseft.commands._common import add_output_arguments, settings_from
from sparseft.errors import ConfigError

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

  # Whisper: the one-shot pruned model recovers on synthetic speech, SquareHead over encoder and decoder
  sparseft finetune --student runs/whisper-sgpt50 --teacher whisper-tiny.en --data espeak --steps 100 \
      --batch-size 4 --lr 1e-5 --out runs/whisper-sgpt50-sh

--data: 'gsm' (generated variants of the packaged GSM problems, never the 100 originals) or a file
(.jsonl with a "text" field per line, or .txt with texts separated by blank lines); for speech and
seq2seq models, speech sources / text pairs (see `sparseft eval --help`).
Masks: --masks FILE, else STUDENT/masks.safetensors, else the student's zero weights (none: dense).
Output: OUT (model, tokenizer, masks, stage.json with the settings and the loss history), written whole at
the end; OUT.checkpoints/checkpoint-N (HF checkpoints + masks.safetensors). --resume continues the newest
complete checkpoint of the same run (same student and training settings; --steps, saving, logging and
held-out scoring may change); checkpoints another run left there are skipped."""


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
    io.add_argument("--data", nargs="+", default=None, metavar="SOURCE",
                    help="training data (train split): texts for causal LMs (gsm: the default, fortunes, austen, "
                         ".jsonl/.txt), speech for Whisper (espeak: the default, or an audio manifest), text pairs "
                         "for T5 (gsm-en-de: the default, or .tsv/.jsonl with source/target)")
    io.add_argument("--num-texts", type=int, default=512, help="training texts, clips or pairs to use (default 512)")
    io.add_argument("--seqlen", type=int, default=256,
                    help="tokens per training example; seq2seq: most tokens per source and label (default 256)")
    io.add_argument("--no-pack", action="store_true",
                    help="one padded example per text instead of packing texts into full windows")
    io.add_argument("--augment", action="store_true",
                    help="speech models: give each read of a training clip a random room echo, background noise "
                         "(5-30 dB SNR) and level, so synthetic clips look more like recordings")
    io.add_argument("--freeze", nargs="+", metavar="REGEX",
                    help="keep the parameters whose names match (re.search) as they are, e.g. "
                         "'^model\\.encoder\\.' to train only a Whisper decoder")
    add_output_arguments(io, "output model folder (checkpoints go to OUT.checkpoints/)")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--loss", default="ce+squarehead",
                      help="terms joined by '+': ce, squarehead, kd (default ce+squarehead, the paper's LLM setting)")
    loss.add_argument("--weight", action="append", default=[], metavar="TERM=W",
                      help="weight of a term, e.g. --weight squarehead=2 (default 1 for each named term)")
    loss.add_argument("--temperature", type=float, default=1.0, help="KD temperature (default 1)")
    loss.add_argument("--squarehead-normalize", choices=["token", "layer"], default="token",
                      help="SquareHead denominator: each token's teacher power (default; attention-sink tokens with "
                           "huge activations would otherwise dominate a layer), or the layer's mean power")
    loss.add_argument("--teacher-dtype", choices=["float32", "bfloat16"], default="float32",
                      help="run the frozen teacher in this dtype (bfloat16 halves its memory)")

    gmp = parser.add_argument_group("gradual magnitude pruning (optional)")
    gmp.add_argument("--gmp", type=float, metavar="FINAL", help="prune gradually to this sparsity (e.g. 0.7)")
    gmp.add_argument("--gmp-initial", type=float, default=0.0, help="sparsity at --gmp-start (default 0)")
    gmp.add_argument("--gmp-start", type=int, default=0, help="first pruning step (default 0)")
    gmp.add_argument("--gmp-end", type=int, help="step at which FINAL is reached (default 3/4 of --steps)")
    gmp.add_argument("--gmp-frequency", type=int, default=10, help="steps between mask updates (default 10)")
    gmp.add_argument("--gmp-scheme", choices=["uniform", "global", "owl"], default="uniform",
                     help="same sparsity in every layer, one magnitude threshold across layers, or owl: each "
                          "block's share by its outlier weights, measured on the dense student first")

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
    run_group.add_argument("--save-steps", type=int, help="checkpoint every N steps (default a quarter of --steps)")
    run_group.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (default 2)")
    run_group.add_argument("--logging-steps", type=int, help="log every N steps (default a twentieth of --steps)")
    run_group.add_argument("--report-to", default=None,
                           help="HF Trainer loggers (default: tensorboard when installed, else none)")
    run_group.add_argument("--eval-steps", type=int,
                           help="held-out score every N steps (and at steps 0 and last): a training curve in the "
                                "record's log_history; perplexity for LMs, WER for speech, BLEU for T5")
    run_group.add_argument("--eval-data", nargs="+", metavar="SOURCE",
                           help="test split sources of --eval-steps (default as for `sparseft eval`: gsm + austen)")
    run_group.add_argument("--eval-texts", type=int, help="texts, clips or pairs per --eval-data source (default 100)")
    run_group.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint of this run (same student and training "
                           "settings) in OUT.checkpoints")
    run_group.add_argument("--fsdp", action="store_true",
                           help="under torchrun/accelerate launch: shard student and teacher with FSDP2, one unit "
                                "per transformer block (also on CPU with gloo); default is DDP")
    parser.set_defaults(func=run)


def _loss(args: argparse.Namespace) -> dict[str, float]:
    """--loss TERMS and --weight TERM=W -> the loss weights of the settings."""
    names = {"ce": "task", "task": "task", "kd": "kd", "squarehead": "squarehead", "sh": "squarehead"}
    terms = [t.strip().lower() for t in args.loss.split("+") if t.strip()]
    unknown = [t for t in terms if t not in names]
    if unknown or not terms:
        raise ConfigError(f"--loss takes terms joined by '+' from ce, kd, squarehead; got {args.loss!r}")
    weights = {"task": 0.0, "kd": 0.0, "squarehead": 0.0} | {names[t]: 1.0 for t in terms}
    for item in args.weight:
        term, _, value = item.partition("=")
        try:
            weights[names[term]] = float(value)
        except (KeyError, ValueError):
            raise ConfigError(f"--weight takes TERM=W with TERM in ce, kd, squarehead; got {item!r}") from None
    return weights | {"temperature": args.temperature, "squarehead_normalize": args.squarehead_normalize}


def _gmp(args: argparse.Namespace) -> dict | None:
    if args.gmp is None:
        return None
    return {"init_sparsity": args.gmp_initial, "final_sparsity": args.gmp, "start_step": args.gmp_start,
            "end_step": args.gmp_end, "frequency": args.gmp_frequency, "scheme": args.gmp_scheme}


def run(args: argparse.Namespace) -> int:
    from sparseft.settings import FinetuneSettings
    from sparseft.stages import StageIO, run_finetune

    loss = _loss(args)
    if (loss["kd"] > 0 or loss["squarehead"] > 0) and not args.teacher:
        raise ConfigError(f"--loss {args.loss} needs --teacher (the dense model to distill from)")
    flags = {"learning_rate": "--lr", "nsamples": "--num-texts", "loss.temperature": "--temperature",
             "gmp.final_sparsity": "--gmp", "gmp.init_sparsity": "--gmp-initial", "gmp.end_step": "--gmp-end"}
    settings = settings_from(
        FinetuneSettings, flags, teacher=args.teacher, masks=args.masks, data=args.data, nsamples=args.num_texts,
        seqlen=args.seqlen, pack=not args.no_pack, augment=args.augment, freeze=args.freeze, loss=loss, teacher_dtype=args.teacher_dtype, gmp=_gmp(args),
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, learning_rate=args.lr,
        warmup=args.warmup, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, seed=args.seed,
        bf16=args.bf16, save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps, report_to=args.report_to, fsdp=args.fsdp,
        eval_steps=args.eval_steps, eval_data=args.eval_data, eval_texts=args.eval_texts,
    )  # fmt: skip
    from sparseft.train.fsdp import end_distributed

    try:
        record = run_finetune(settings, StageIO(args.student, Path(args.out), resume=args.resume,
                                                    overwrite=True if args.overwrite else None))
    finally:
        end_distributed()  # a torchrun rank exits with its process group closed
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the first rank reports
        return 0
    print(json.dumps({"out": args.out, "total_sparsity": round(record["total_sparsity"], 4),
                      "train_seconds": record["train_seconds"]}))
    return 0
