"""Sparse fine-tuning of SmolLM2-135M on GSM variants: teacher, one-shot 50%, SquareHead vs CE-only.

The paper's recipe at CPU scale: (1) fine-tune the dense model on generated GSM problems -> teacher;
(2) prune a copy one-shot to 50% (SparseGPT, calibrated on the training texts); (3) fine-tune the
pruned copy with CE + SquareHead from the frozen teacher, and (4) with CE only, same data, steps and LR.
Held-out perplexity is measured on the worked answers of the 100 original problems (never trained on).

    OMP_WAIT_POLICY=passive python benchmarks/finetune_smollm2.py --steps 50 --batch 4 --seqlen 128
    -> benchmarks/results/finetune_smollm2.json, benchmarks/results/finetune_smollm2_losses.png

Intermediate models go to runs/finetune_smollm2/ (gitignored); a rerun reuses the teacher and the pruned model.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import time
from pathlib import Path

import torch
from transformers import TrainingArguments

from sparseft.data import gsm_problems, load_texts
from sparseft.data.calibration import calibration_batches
from sparseft.evaluate.perplexity import perplexity
from sparseft.models import find_prunable, load_model, load_tokenizer
from sparseft.prune import load_masks, save_masks, sparsity_report
from sparseft.prune.driver import oneshot
from sparseft.train import CausalLMTexts, DistillConfig, SparseTrainer

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "finetune_smollm2.json"
PLOT = ROOT / "results" / "finetune_smollm2_losses.png"
RUNS = ROOT.parent / "runs" / "finetune_smollm2"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--texts", type=int, default=256, help="number of generated GSM training problems")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--method", default="sparsegpt", choices=["sparsegpt", "magnitude"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--runs", default="ce_squarehead,ce_only", help="student runs to do (comma-separated)")
    p.add_argument("--name", default="finetune_smollm2", help="results file stem under benchmarks/results/")
    p.add_argument(
        "--reuse-ppl",
        help="results JSON whose dense/teacher/pruned perplexities are reused "
        "(the cached teacher and pruned models in runs/ are the ones it measured)",
    )
    return p.parse_args()


def train(name, student, train_set, args, teacher=None, masks=None, distill=None) -> tuple[list[dict], float]:
    """One fine-tuning run with the shared settings; returns (log history, seconds)."""
    targs = TrainingArguments(
        output_dir=str(RUNS / name),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.steps // 10),
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SparseTrainer(
        model=student,
        args=targs,
        train_dataset=train_set,
        teacher=teacher,
        masks=masks,
        distill=distill,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    student.eval()
    return [h for h in trainer.state.log_history if "loss" in h], seconds


def save(results: dict) -> None:
    path = RESULTS.with_name(results["settings"]["name"] + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for run, style in [("teacher", ":"), ("ce_only", "--"), ("ce_squarehead", "-")]:
        hist = results["runs"].get(run, {}).get("log_history", [])
        if hist:
            ax[0].plot([h["step"] for h in hist], [h["loss_task"] for h in hist], style, label=f"{run}: CE")
    hist = results["runs"].get("ce_squarehead", {}).get("log_history", [])
    if hist:
        ax[1].plot(
            [h["step"] for h in hist],
            [h["loss_squarehead"] for h in hist],
            "-",
            label="SquareHead (sum of 30 layers)",
        )
        ax[1].plot(
            [h["step"] for h in hist], [h["loss"] for h in hist], "--", label="total = CE + SquareHead"
        )
    ax[0].set(title="task loss (CE) per run", xlabel="step", ylabel="loss")
    ax[1].set(title="CE + SquareHead run: components", xlabel="step", ylabel="loss", yscale="log")
    for a in ax:
        a.legend()
        a.grid(alpha=0.3)
    fig.suptitle(f"SmolLM2-135M, 50% {results['settings']['method']}, {results['settings']['steps']} steps")
    fig.tight_layout()
    fig.savefig(PLOT.with_name(results["settings"]["name"] + "_losses.png"), dpi=110)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tokenizer = load_tokenizer("smollm2-135m")
    texts = load_texts("gsm", "train", n=args.texts, seed=0)
    heldout = [p.text for p in gsm_problems()]
    train_set = CausalLMTexts(tokenizer, texts, seqlen=args.seqlen, pack=True)
    results = {
        "settings": {
            **vars(args),
            "train_windows": len(train_set),
            "heldout_texts": len(heldout),
            "tokens_per_step": args.batch * args.seqlen,
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "optimizer": "AdamW, cosine LR, 10% warmup, clip 1.0",
        },
        "perplexity": {},
        "runs": {},
    }

    reused = json.loads(Path(args.reuse_ppl).read_text())["perplexity"] if args.reuse_ppl else {}

    def ppl(model, key: str) -> None:
        if key in reused and key in ("dense_before", "teacher", "pruned"):  # never a student's: it is new
            results["perplexity"][key] = reused[key]
            logging.info("perplexity %s = %.4f (reused from %s)", key, reused[key], args.reuse_ppl)
            return
        start = time.perf_counter()
        results["perplexity"][key] = perplexity(
            model, tokenizer, heldout, seqlen=args.eval_seqlen, batch_size=4
        )
        logging.info(
            "perplexity %s = %.4f (%.0f s)", key, results["perplexity"][key], time.perf_counter() - start
        )
        save(results)

    dense = load_model("smollm2-135m")
    ppl(dense, "dense_before")

    teacher_dir = RUNS / "teacher-final"
    if (teacher_dir / "config.json").exists():
        teacher = load_model(teacher_dir)
    else:
        teacher = dense
        history, seconds = train("teacher", teacher, train_set, args, distill=DistillConfig(1.0, 0.0, 0.0))
        results["runs"]["teacher"] = {"seconds": seconds, "log_history": history}
        teacher.save_pretrained(teacher_dir)
    ppl(teacher, "teacher")

    pruned_dir = RUNS / f"pruned-{args.method}"
    if (pruned_dir / "masks.safetensors").exists():
        pruned, masks = load_model(pruned_dir), load_masks(pruned_dir / "masks.safetensors")
    else:
        pruned = copy.deepcopy(teacher)
        calib = calibration_batches(tokenizer, texts, nsamples=64, seqlen=args.seqlen, batch_size=8)
        start = time.perf_counter()
        report = oneshot(pruned, calib, method=args.method, sparsity=args.sparsity, progress=False)
        results["oneshot_seconds"] = time.perf_counter() - start
        masks = report.masks
        pruned.save_pretrained(pruned_dir)
        save_masks(masks, pruned_dir / "masks.safetensors")
    results["pruned_sparsity"] = sparsity_report(pruned, find_prunable(pruned)).sparsity
    ppl(pruned, "pruned")

    wanted = args.runs.split(",")
    for run, terms in [
        (r, t) for r, t in [("ce_squarehead", "ce+squarehead"), ("ce_only", "ce")] if r in wanted
    ]:
        student = copy.deepcopy(pruned)
        distill = DistillConfig.from_terms(terms)
        history, seconds = train(
            run,
            student,
            train_set,
            args,
            teacher=teacher if distill.needs_teacher else None,
            masks={k: v.clone() for k, v in masks.items()},
            distill=distill,
        )
        results["runs"][run] = {
            "seconds": seconds,
            "log_history": history,
            "final_sparsity": sparsity_report(student, list(masks)).sparsity,
        }
        ppl(student, run)
        del student

    p = results["perplexity"]
    for run in wanted:
        results[f"{run}_vs_teacher"] = p[run] / p["teacher"] - 1.0
    save(results)
    plot(results)
    logging.info("done: %s", json.dumps(p))


if __name__ == "__main__":
    main()
