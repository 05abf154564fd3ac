"""The paper's loss ablation on SmolLM2-135M, evaluated in-domain and out-of-domain.

1. Teacher: the dense model fine-tuned (CE) on the training mix for `--steps` steps.
2. Students: the teacher pruned one-shot by SparseGPT to each `--sparsity`, then fine-tuned for the same
   steps, data and learning rate with each loss: CE only, CE + logit KD, CE + SquareHead.
3. Every model is evaluated on the test splits of gsm (original problems of templates never trained on)
   and austen (Persuasion, a novel never trained on); perplexity relative to the teacher.

Only the public API is used (`sparseft.stages`), so each step is what `sparseft finetune/oneshot/eval`
would do. Results: experiments/results/<name>.json and <name>.png; stage folders under --out. A folder
that an earlier run under the same --out finished (its stage.json written) is reused when its settings
match, so a new loss or sparsity adds to an ablation without re-training the teacher.

On a 2-core machine a second thread speeds one run up by only ~20% (bf16 training of SmolLM2 at batch
4 x 128: 2.5 s/step at 1 thread, 2.05 s at 2), so `--jobs 2` runs two one-thread runs side by side.

    python experiments/ablation.py --steps 200 --sparsity 0.5 0.7 0.8 --bf16 --jobs 2 --name ablation_200
    python experiments/ablation.py --steps 300 --sparsity 0.5 0.7 --lr 1e-4 --student-seed 1 --texts 4096 \
        --eval-steps 100 --bf16 --jobs 2 --name ablation_v2
    python experiments/ablation.py --steps 300 --sparsity 0.5 0.7 --lr 1e-4 --student-seed 1 --texts 4096 \
        --eval-steps 100 --bf16 --jobs 2 --losses ce ce+kd ce+squarehead ce+kd+squarehead \
        --name ablation_v3 --out runs/ablation_v2
    python experiments/ablation.py --steps 300 --sparsity 0.5 --lr 1e-4 --student-lr 1e-4 3e-4 1e-3 \
        --student-seed 1 --texts 4096 --eval-steps 100 --bf16 --jobs 2 --losses ce+kd+squarehead --name lr_sweep
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from sparseft.models.saving import RECORD_FILE
from sparseft.settings import EvalSettings, FinetuneSettings, OneShotSettings
from sparseft.stages import StageIO, run_eval, run_finetune, run_oneshot

LOSSES = {
    "ce": {"task": 1.0, "kd": 0.0, "squarehead": 0.0},
    "ce+kd": {"task": 1.0, "kd": 1.0, "squarehead": 0.0},
    "ce+squarehead": {"task": 1.0, "kd": 0.0, "squarehead": 1.0},
    "ce+kd+squarehead": {"task": 1.0, "kd": 1.0, "squarehead": 1.0},  # the paper's recipe: both distillation terms
    "squarehead": {"task": 0.0, "kd": 0.0, "squarehead": 1.0},
    # the per-layer denominator, dominated by attention-sink tokens (see sparseft.distill.squarehead)
    "ce+squarehead/layer": {"task": 1.0, "kd": 0.0, "squarehead": 1.0, "squarehead_normalize": "layer"},
}
DATA = ["gsm", "austen"]
RESULTS = Path(__file__).parent / "results"


def _finished(out: Path, expected: dict) -> dict | None:
    """The record of a folder an earlier run finished with the same settings, else None (raises on others)."""
    path = out / RECORD_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    stored = {key: record["settings"].get(key) for key in expected}
    if stored != expected:
        raise SystemExit(f"{out} was made with {stored}, not {expected}: give another --out")
    print(f"reusing {out}", flush=True)
    return record


def _finetune(args, loss: dict, student: str, teacher: str | None, out: Path, seed: int = 0,
              lr: float | None = None) -> tuple[dict, bool]:
    """(the fine-tune's record, whether an earlier run's finished folder was reused)."""
    settings = FinetuneSettings(
        seed=seed,
        teacher=teacher, data=DATA, nsamples=args.texts, steps=args.steps, batch_size=args.batch_size,
        seqlen=args.seqlen, learning_rate=lr or args.lr, loss=loss, save_steps=args.steps,
        logging_steps=max(1, args.steps // 20),
        bf16=args.bf16, teacher_dtype="bfloat16" if args.bf16 else "float32",
        eval_steps=args.eval_steps, eval_data=DATA, eval_texts=args.eval_texts,
    )  # fmt: skip
    dumped = settings.model_dump(mode="json")
    keys = ("steps", "learning_rate", "loss", "seed", "nsamples", "batch_size", "seqlen", "teacher")
    finished = _finished(out, {key: dumped[key] for key in keys})
    if finished:
        return finished, True
    return run_finetune(settings, StageIO(student, out, source=args.model, resume=True)), False


def _eval(args, model: str) -> dict:
    settings = EvalSettings(data=DATA, max_texts=args.final_texts, seqlen=512)
    return run_eval(settings, StageIO(model, source=args.model))["perplexity"]


def _history(record: dict) -> list[dict]:
    return [{k: h[k] for k in ("step", "loss", "loss_task", "loss_kd", "loss_squarehead") if k in h}
            for h in record["log_history"] if "loss" in h]


def _heldout(record: dict) -> list[dict]:
    from sparseft.train.heldout import heldout_history

    return heldout_history(record["log_history"])


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    # Die with the parent: a killed ablation must not leave its workers training for an hour (Linux prctl).
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _oneshot_task(args, sparsity: float) -> tuple[str, dict, float]:
    start = time.perf_counter()
    out = Path(args.out)
    tag = f"{round(sparsity * 100)}"
    calib = {"source": DATA, "nsamples": args.calib, "seqlen": 512}
    allocation = {} if args.allocation == "uniform" else {"allocation": args.allocation}
    settings = OneShotSettings(sparsity=sparsity, calib=calib, progress=False, **allocation)
    dumped = settings.model_dump(mode="json")
    reused = _finished(out / f"sgpt{tag}", {key: dumped[key] for key in ("sparsity", "calib", "allocation")})
    if not reused:
        run_oneshot(settings, StageIO(str(out / "teacher"), out / f"sgpt{tag}", resume=True))
    result = {"perplexity": _eval(args, str(out / f"sgpt{tag}")), "reused": bool(reused)}
    seconds = reused["seconds"] if reused else time.perf_counter() - start  # reused: the pruning time it took
    return f"{tag}% one-shot", result, seconds


def _finetune_task(args, sparsity: float, name: str, lr: float) -> tuple[str, dict, float]:
    """One student: `name`'s loss at learning rate `lr` (a folder and row of its own when it is not --lr)."""
    start = time.perf_counter()
    out = Path(args.out)
    tag = f"{round(sparsity * 100)}"
    lr_text = f"{lr:.0e}".replace("e-0", "e-")  # 3e-4
    suffix = "" if lr == args.lr else f"-lr{lr_text}"
    folder = out / f"sgpt{tag}-{name.replace('/', '-')}{suffix}"
    record, reused = _finetune(args, LOSSES[name], str(out / f"sgpt{tag}"), str(out / "teacher"), folder,
                               args.student_seed, lr)
    result = {"perplexity": _eval(args, str(folder)), "history": _history(record), "heldout": _heldout(record),
              "total_sparsity": record["total_sparsity"], "reused": reused, "learning_rate": lr}
    seconds = record["train_seconds"] if reused else time.perf_counter() - start  # reused: its training time
    return f"{tag}% {name}" + (f" lr {lr_text}" if suffix else ""), result, seconds


def run(args) -> dict:
    """Teacher first (all threads), then one-shot and fine-tune runs on `--jobs` workers."""
    out = Path(args.out)
    results = {"settings": vars(args), "runs": {}, "seconds": {}}
    path = RESULTS / f"{args.name}.json"
    start = time.perf_counter()
    results["runs"]["dense"] = {"perplexity": _eval(args, args.model)}
    teacher, _ = _finetune(args, LOSSES["ce"], args.model, None, out / "teacher")
    results["runs"]["teacher"] = {"perplexity": _eval(args, str(out / "teacher")), "history": _history(teacher),
                                  "heldout": _heldout(teacher)}
    results["seconds"]["dense + teacher"] = round(time.perf_counter() - start, 1)
    _save(results, path)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init_worker,
                             initargs=(args.threads,)) as pool:
        pending = {pool.submit(_oneshot_task, args, s): s for s in args.sparsity}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                sparsity = pending.pop(future)
                name, result, seconds = future.result()
                results["runs"][name] = result
                results["seconds"][name] = round(seconds, 1)
                _save(results, path)
                print(f"{name}: {result['perplexity']} ({seconds:.0f} s)", flush=True)
                if name.endswith("one-shot"):
                    for loss in args.losses:
                        for lr in args.student_lr or [args.lr]:
                            pending[pool.submit(_finetune_task, args, sparsity, loss, lr)] = sparsity
    plot(results, path.with_suffix(".png"))
    return results


def _save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))


def plot(results: dict, path: Path) -> None:
    """Left: perplexity / teacher per run, both domains. Middle: task loss curves of the students. Right:
    held-out austen perplexity during training (every `--eval-steps`, first `--eval-texts` texts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    teacher = runs["teacher"]["perplexity"]
    names = [n for n in runs if n != "dense"]
    fig, (left, right, curves) = plt.subplots(1, 3, figsize=(19, 4.5))
    for i, source in enumerate(teacher):
        left.bar([x + 0.4 * i for x in range(len(names))], [runs[n]["perplexity"][source] / teacher[source] for n in names],
                 0.4, label=f"{source} (test split)")
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_xticks([x + 0.2 for x in range(len(names))], names, rotation=35, ha="right")
    left.set_ylabel("perplexity / dense teacher")
    left.set_yscale("log")
    left.legend()
    for name in names:
        history = runs[name].get("history")
        if history and name != "teacher":
            right.plot([h["step"] for h in history], [h.get("loss_task", h["loss"]) for h in history], label=name)
    right.set_xlabel("step")
    right.set_ylabel("task loss (CE, training batches)")
    right.legend(fontsize=7)
    for name in names:
        points = runs[name].get("heldout")
        if points:
            curves.plot([p["step"] for p in points], [p["austen"] for p in points], marker="o", label=name)
    curves.set_xlabel("step")
    curves.set_ylabel("held-out austen perplexity (during training)")
    curves.set_yscale("log")
    curves.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(results: dict) -> str:
    """The results as a markdown table: perplexity on both test splits, and relative to the teacher."""
    runs = results["runs"]
    teacher = runs["teacher"]["perplexity"]
    lines = ["| model | gsm | austen | gsm / teacher | austen / teacher | run time (s, shared cores) |",
             "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        ppl = run["perplexity"]
        seconds = results["seconds"].get(name, "")
        if run.get("reused"):  # made by an earlier run under the same --out (its time), evaluated here
            seconds = f"{seconds} (reused)"
        lines.append(f"| {name} | {ppl['gsm']:.2f} | {ppl['austen']:.1f} | {ppl['gsm'] / teacher['gsm']:.2f} | "
                     f"{ppl['austen'] / teacher['austen']:.2f} | {seconds} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":  # python experiments/ablation.py --table ablation_v2
        print(table(json.loads((RESULTS / f"{sys.argv[2]}.json").read_text())))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.7])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--texts", type=int, default=1024, help="training texts (mixed gsm + austen)")
    p.add_argument("--calib", type=int, default=64, help="calibration windows of 512 tokens")
    p.add_argument("--final-texts", type=int, default=200, help="test texts per source of the final evaluation")
    p.add_argument("--losses", nargs="+", default=["ce", "ce+kd", "ce+squarehead"], choices=list(LOSSES))
    p.add_argument("--allocation", default="uniform", help="per-block sparsity allocation of the one-shot step")
    p.add_argument("--student-seed", type=int, default=0,
                   help="data seed of the students (the teacher uses 0): another value gives them fresh windows "
                        "of the same train splits instead of the ones the teacher was fine-tuned on")
    p.add_argument("--student-lr", type=float, nargs="+", default=None,
                   help="learning rates of the students (default: --lr, the teacher's); each one a run per loss")
    p.add_argument("--eval-steps", type=int, default=None,
                   help="held-out perplexity every N training steps (the curves of the right panel)")
    p.add_argument("--eval-texts", type=int, default=50, help="test texts per source of those curve points")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast training and a bf16 teacher (AMX)")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side after the teacher")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each side-by-side run")
    p.add_argument("--name", default="ablation", help="results file name under experiments/results")
    p.add_argument("--out", default="runs/ablation")
    print(json.dumps(run(p.parse_args())["runs"], indent=2, default=str)[:4000])


if __name__ == "__main__":
    main()
