"""`sparseft demo`: the whole pipeline on the packaged SmolLM2-135M, in minutes on 2 cores, offline.

dense eval -> SparseGPT one-shot -> eval -> SquareHead fine-tune -> eval -> compress -> eval on the
sparse kernels -> decode speed of the compressed model vs dense PyTorch, measured in the same run. It is
the recipe `demo_recipe` builds, run by `sparseft.pipeline.run_recipe`: nothing here but its summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparseft.atomic import atomic_write_text


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="prune + fine-tune + compress + benchmark the packaged SmolLM2-135M, with a report",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Outputs: OUT/NN-STAGE/ per stage (resumable: a rerun reuses the stages whose settings did not change), OUT/summary.json, "
            "OUT/demo.png. Perplexity is on the test splits of gsm (original problems of templates never used "
            "for calibration or training) and austen (Persuasion, a novel never trained on), first --texts of each."
        ),
    )
    parser.add_argument("--model", default="smollm2-135m", help="packaged name or model folder (default smollm2-135m)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="target sparsity (default 0.5)")
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps (default 20)")
    parser.add_argument("--values", default="bf16", metavar="FORMAT",
                        help="value type of the compressed weights (default bf16)")
    parser.add_argument("--texts", type=int, default=50, help="held-out texts per test split for perplexity (default 50)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens in the decode benchmark (default 32)")
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--restart", action="store_true", help="redo every stage")
    parser.set_defaults(func=run)


def demo_recipe(args: argparse.Namespace):
    from sparseft.recipe import parse_recipe

    # In-domain (GSM problems of held-out templates) and out-of-domain (a novel never trained on), side
    # by side; calibration and fine-tuning mix the task with general English, as a real recipe should.
    evaluate = {"eval": {"data": ["gsm", "austen"], "max_texts": args.texts}}
    data = ["gsm", "austen"]
    return parse_recipe({
        "model": args.model,
        "output": args.out,
        "stages": [
            evaluate,
            {"oneshot": {"method": "sparsegpt", "sparsity": args.sparsity,
                         "calib": {"source": data, "nsamples": 32, "seqlen": 256}}},
            evaluate,
            {"finetune": {"data": data, "steps": args.steps, "batch_size": 4, "seqlen": 128, "nsamples": 256,
                          "learning_rate": 1e-4, "loss": {"task": 1.0, "kd": 0.0, "squarehead": 1.0}}},
            evaluate,
            {"compress": {"values": args.values}},
            evaluate,
            {"bench": {"tokens": args.tokens, "baseline": "source"}},
        ],
    })


def plot(summary: dict, path: Path) -> None:
    """Perplexity per stage relative to dense, in-domain beside out-of-domain; decode speed beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    stages = list(summary["perplexity"])
    sources = list(summary["perplexity"][stages[0]])
    width = 0.8 / len(sources)
    for i, source in enumerate(sources):
        dense = summary["perplexity"][stages[0]][source]
        ratios = [summary["perplexity"][stage][source] / dense for stage in stages]
        left.bar([x + i * width for x in range(len(stages))], ratios, width, label=source)
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_xticks([x + width * (len(sources) - 1) / 2 for x in range(len(stages))], stages, rotation=15)
    left.set_ylabel("held-out perplexity / dense (lower is better)")
    left.legend(title="test split")
    names, speeds = zip(*summary["decode_tokens_per_s"].items(), strict=True)
    right.bar(names, speeds, color=["grey", "tab:blue"])
    right.set_ylabel(f"greedy decode tokens/s ({summary['threads']} threads)")
    fig.suptitle(f"{summary['model']}: {summary['sparsity']:.0%} sparse, {summary['values']} values")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from sparseft.pipeline import run_recipe

    records = run_recipe(demo_recipe(args), resume=not args.restart)
    evals = [r for r in records if r["stage"] == "eval"]
    bench = records[-1]
    speeds = {"dense fp32": bench["tokens_per_s"]["baseline"], f"sparse {args.values}": bench["tokens_per_s"]["model"]}
    summary = {
        "model": args.model, "sparsity": args.sparsity, "values": args.values, "threads": bench["threads"],
        "heldout_texts": evals[0]["texts"], "heldout_tokens": evals[0]["tokens"],
        "perplexity": dict(zip(["dense", "one-shot SparseGPT", "+ SquareHead fine-tune", "compressed"],
                               [{s: round(p, 3) for s, p in r["perplexity"].items()} for r in evals], strict=True)),
        "weight_sparsity": round(evals[-1]["sparsity"], 4),
        "finetune_steps": args.steps,
        "decode_tokens_per_s": {k: round(v, 2) for k, v in speeds.items()},
        "decode_speedup": round(bench["speedup"], 2),
        "decode_new_tokens": args.tokens,
    }  # fmt: skip
    out = Path(args.out)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    plot(summary, out / "demo.png")
    print(json.dumps(summary, indent=2))
    print(f"report: {out / 'summary.json'}, plot: {out / 'demo.png'}")
    return 0
