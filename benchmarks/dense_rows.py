"""A dense matrix in the bitmask layout: the kernels that read no mask vs the mask-and-expand ones.

SmolLM2-135M's tied lm_head (49152 x 576) as int8 values, weight-only and W8A8, batch 1, 1 thread. Two
packings of the same weight: every column stored (`WeightHandle.all_stored`: plain 4-row streams, no mask
words, no vpexpandb) and a copy with 5.2% of its entries zeroed (just under `DENSE_ABOVE`, so the zeros
stay out and the mask path runs; it reads 5% fewer values, in its favour). Three copies of each rotate
so that every call streams from memory (97 MB > the L3), timed in interleaved rounds (`best_times`).

    python benchmarks/dense_rows.py --out benchmarks/results/dense_rows.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sparseft.models import load_model
from sparseft.runtime.format import compress
from sparseft.runtime.kernels import linear, pack_weight
from sparseft.runtime.timing import bandwidth_gbs, best_times

COPIES = 3


def handles(weight: torch.Tensor, act: str) -> list:
    return [pack_weight(compress(weight.clone(), "int8"), act=act) for _ in range(COPIES)]


def rotating(hs: list, x: torch.Tensor):
    """One call per invocation, on the next copy."""
    state = {"i": 0}

    def call() -> None:
        linear(x, hs[state["i"] % len(hs)])
        state["i"] += 1

    return call


def head_weight_from_args(doc: str) -> tuple[argparse.Namespace, torch.Tensor]:
    """(--model / --out arguments, a copy of the model's lm_head weight), with torch on 1 thread: the
    set-up of the head benchmarks (this one and head_formats.py)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    return args, load_model(args.model).lm_head.weight.detach().clone()


def main() -> None:
    args, w = head_weight_from_args(__doc__)
    gapped = w * (torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) >= 0.052)
    x = torch.randn(1, w.shape[1])
    record = {"model": args.model, "shape": list(w.shape), "threads": 1, "batch": 1,
              "read_bandwidth_gbs": round(bandwidth_gbs(), 1), "ms": {}}
    for act in ("none", "dynamic-int8"):
        full, masked = handles(w, act), handles(gapped, act)
        assert full[0].all_stored and not masked[0].all_stored
        t = best_times({"all stored": rotating(full, x), "mask path": rotating(masked, x)}, seconds=0.5, rounds=9)
        record["ms"][act] = {k: round(v * 1e3, 3) for k, v in t.items()}
        record["ms"][act]["speedup"] = round(t["mask path"] / t["all stored"], 2)
        print(act, record["ms"][act], flush=True)
    mb = w.numel() / 1e6  # int8 values read per call by the all-stored kernels
    record["all_stored_gbs"] = {a: round(mb / r["all stored"], 1) for a, r in record["ms"].items()}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
