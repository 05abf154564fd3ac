"""`sparseft demo`: the pipeline on the packaged SmolLM2-135M, in minutes on 2 cores, no network.

Stages that exist run for real; each prints what it measured and writes under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the pipeline on the packaged SmolLM2-135M (prune, evaluate) and print a report",
        description=(
            "Load the packaged SmolLM2-135M, measure held-out perplexity on the 100 original GSM problems, "
            "magnitude-prune it to --sparsity, report per-layer sparsity and perplexity after."
        ),
    )
    parser.add_argument("--model", default="smollm2-135m", help="packaged name or model folder (default smollm2-135m)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="target sparsity (default 0.5)")
    parser.add_argument("--out", default="runs/demo", help="where outputs go (default runs/demo)")
    parser.set_defaults(func=run)


def _timed(label: str, fn):
    start = time.perf_counter()
    value = fn()
    print(f"[{time.perf_counter() - start:6.1f}s] {label}")
    return value


def run(args: argparse.Namespace) -> int:
    from sparseft.data import gsm_problems
    from sparseft.evaluate.perplexity import perplexity
    from sparseft.models import load_model, load_tokenizer
    from sparseft.models.saving import save_model_folder
    from sparseft.prune import magnitude_prune, sparsity_report

    out = Path(args.out)
    heldout = [p.text for p in gsm_problems()]
    model = _timed(f"load {args.model}", lambda: load_model(args.model))
    tokenizer = load_tokenizer(args.model)
    dense_ppl = _timed("perplexity, dense", lambda: perplexity(model, tokenizer, heldout))
    masks = _timed(f"magnitude prune to {args.sparsity:.0%}", lambda: magnitude_prune(model, args.sparsity))
    report = sparsity_report(model, masks)
    print(report.format(max_rows=14))
    pruned_ppl = _timed("perplexity, pruned", lambda: perplexity(model, tokenizer, heldout))
    summary = {
        "model": args.model,
        "heldout": "100 original GSM problems with worked answers",
        "perplexity_dense": round(dense_ppl, 3),
        f"perplexity_magnitude_{args.sparsity:.0%}": round(pruned_ppl, 3),
        "total_sparsity": round(report.sparsity, 4),
    }
    save_model_folder(model, out / "magnitude", tokenizer=tokenizer, masks=masks, record=report.as_dict())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0
