"""Uniform vs OWL per-block sparsity for one-shot SparseGPT, evaluated in-domain and out-of-domain.

Prunes `--model` (e.g. the ablation's fine-tuned dense teacher) at each `--sparsity` with each allocation
(uniform; OWL at each `--lam`), with the same calibration windows, and evaluates every result on the
test splits of gsm (held-out templates) and austen (Persuasion). Only the public stage API is used.
Results: experiments/results/<name>.json; stage folders under --out.

    python experiments/allocation.py --model runs/ablation_200/teacher --sparsity 0.7 0.8 --lam 0.04 0.08
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sparseft.settings import EvalSettings, OneShotSettings
from sparseft.stages import StageIO, run_eval, run_oneshot

DATA = ["gsm", "austen"]
RESULTS = Path(__file__).parent / "results"


def _variants(args) -> list[tuple[str, dict]]:
    variants = [("uniform", {})] if "uniform" in args.allocations else []
    if "owl" in args.allocations:
        variants += [(f"owl lam={lam}", {"allocation": "owl", "owl_lambda": lam}) for lam in args.lam]
    return variants


def run(args) -> dict:
    out = Path(args.out)
    results: dict = {"settings": vars(args), "runs": {}}
    path = RESULTS / f"{args.name}.json"
    calib = {"source": DATA, "nsamples": args.calib, "seqlen": 512}
    for sparsity in args.sparsity:
        for name, extra in _variants(args):
            start = time.perf_counter()
            folder = out / f"{round(sparsity * 100)}-{name.replace(' ', '-').replace('=', '')}"
            settings = OneShotSettings(sparsity=sparsity, calib=calib, progress=False, **extra)
            record = run_oneshot(settings, StageIO(args.model, folder, resume=True))
            perplexity = run_eval(EvalSettings(data=DATA, max_texts=args.eval_texts, seqlen=512),
                                  StageIO(str(folder), source=args.model))["perplexity"]
            results["runs"][f"{round(sparsity * 100)}% {name}"] = {
                "perplexity": perplexity, "total_sparsity": record["total_sparsity"],
                "block_sparsity": record.get("block_sparsity", {}), "seconds": round(time.perf_counter() - start, 1),
            }  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2))
            print(f"{sparsity:.0%} {name}: {perplexity}", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.7, 0.8])
    p.add_argument("--allocations", nargs="+", default=["uniform", "owl"], choices=["uniform", "owl"])
    p.add_argument("--lam", type=float, nargs="+", default=[0.08], help="OWL lambda values to try")
    p.add_argument("--calib", type=int, default=64, help="calibration windows of 512 tokens")
    p.add_argument("--eval-texts", type=int, default=200, help="test texts per source")
    p.add_argument("--name", default="allocation")
    p.add_argument("--out", default="runs/allocation")
    run(p.parse_args())


if __name__ == "__main__":
    main()
