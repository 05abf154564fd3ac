"""The paper's loss ablation on SmolLM2-135M, evaluated in-domain and out-of-domain.

1. Teacher: the dense model fine-tuned (CE) on the training mix for `--steps` steps.
2. Students: the teacher pruned one-shot by SparseGPT to each `--sparsity`, then fine-tuned for the same
   steps, data and learning rate with each loss: CE only, CE + logit KD, CE + SquareHead.
3. Every model is evaluated on the test splits of gsm (original problems of templates never trained on)
   and austen (Persuasion, a novel never trained on); perplexity relative to the teacher.

Only the public API is used (`sparseft.stages`), so each step is what `sparseft finetune/oneshot/eval`
would do. Results: experiments/results/ablation.json and ablation.png; stage folders under --out.

    python experiments/ablation.py --steps 80 --sparsity 0.5 0.7 --out runs/ablation
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sparseft.settings import EvalSettings, FinetuneSettings, OneShotSettings
from sparseft.stages import StageIO, run_eval, run_finetune, run_oneshot

LOSSES = {
    "ce": {"task": 1.0, "kd": 0.0, "squarehead": 0.0},
    "ce+kd": {"task": 1.0, "kd": 1.0, "squarehead": 0.0},
    "ce+squarehead": {"task": 1.0, "kd": 0.0, "squarehead": 1.0},
}
DATA = ["gsm", "austen"]
RESULTS = Path(__file__).parent / "results"


def _finetune(args, loss: dict, student: str, teacher: str | None, out: Path) -> dict:
    settings = FinetuneSettings(
        teacher=teacher, data=DATA, nsamples=args.texts, steps=args.steps, batch_size=args.batch_size,
        seqlen=args.seqlen, learning_rate=args.lr, loss=loss, save_steps=args.steps, logging_steps=max(1, args.steps // 16),
    )  # fmt: skip
    return run_finetune(settings, StageIO(student, out, source=args.model, resume=True))


def _eval(args, model: str) -> dict:
    settings = EvalSettings(data=DATA, max_texts=args.eval_texts, seqlen=512)
    return run_eval(settings, StageIO(model, source=args.model))["perplexity"]


def _history(record: dict) -> list[dict]:
    return [{k: h[k] for k in ("step", "loss", "loss_task", "loss_kd", "loss_squarehead") if k in h}
            for h in record["log_history"] if "loss" in h]


def run(args) -> dict:
    out = Path(args.out)
    results = {"settings": vars(args), "runs": {}}

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
        return value

    results["runs"]["dense"] = {"perplexity": timed("eval dense", lambda: _eval(args, args.model))}
    teacher = timed("teacher", lambda: _finetune(args, LOSSES["ce"], args.model, None, out / "teacher"))
    results["runs"]["teacher"] = {"perplexity": _eval(args, str(out / "teacher")), "history": _history(teacher)}
    _save(results)
    for sparsity in args.sparsity:
        tag = f"{round(sparsity * 100)}"
        pruned = out / f"sgpt{tag}"
        calib = {"source": DATA, "nsamples": args.calib, "seqlen": 512}
        oneshot = OneShotSettings(sparsity=sparsity, calib=calib, progress=False)
        timed(f"oneshot {tag}", lambda o=oneshot, p=pruned: run_oneshot(o, StageIO(str(out / "teacher"), p)))
        results["runs"][f"{tag}% one-shot"] = {"perplexity": _eval(args, str(pruned))}
        for name, loss in LOSSES.items():
            folder = out / f"sgpt{tag}-{name}"
            record = timed(f"{tag}% {name}", lambda f=folder, lo=loss, s=str(pruned): _finetune(
                args, lo, s, str(out / "teacher"), f))
            results["runs"][f"{tag}% {name}"] = {"perplexity": _eval(args, str(folder)), "history": _history(record),
                                                 "total_sparsity": record["total_sparsity"]}
            _save(results)
    plot(results, RESULTS / "ablation.png")
    return results


def _save(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ablation.json").write_text(json.dumps(results, indent=2, default=str))


def plot(results: dict, path: Path) -> None:
    """Left: perplexity / teacher per run, both domains. Right: task loss curves of the students."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    teacher = runs["teacher"]["perplexity"]
    names = [n for n in runs if n != "dense"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.7])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--texts", type=int, default=1024, help="training texts (mixed gsm + austen)")
    p.add_argument("--calib", type=int, default=64, help="calibration windows of 512 tokens")
    p.add_argument("--eval-texts", type=int, default=200, help="test texts per source")
    p.add_argument("--out", default="runs/ablation")
    print(json.dumps(run(p.parse_args())["runs"], indent=2, default=str)[:4000])


if __name__ == "__main__":
    main()
