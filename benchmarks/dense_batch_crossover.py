"""From how many rows of x the dense copy (runtime/dense_batch.py) beats the sparse kernels, per value type.

For each batch N, the same SparseLinear weight is timed on the sparse kernels (``forced_dense_batches("off")``)
and on its dense copy (``"on"``), interleaved round by round (best of ``--rounds``), 1 thread by default:

    OMP_WAIT_POLICY=passive .venv/bin/python benchmarks/dense_batch_crossover.py --out benchmarks/results/dense_batch_crossover.json

Shapes: Whisper tiny's encoder projections (384 -> 1536 -> 384) at 50% and 70% unstructured sparsity;
value types: int8 weight-only (fp32 x) and W8A8 (int8 x per token). Prints the ratio sparse / dense
per batch (above 1: the dense copy is faster) and writes the timings with the machine's facts.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sparseft.runtime.dense_batch import forced_dense_batches
from sparseft.runtime.format import compress
from sparseft.runtime.kernels import linear, pack_weight, set_num_threads

BATCHES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1500)
SHAPES = ((1536, 384), (384, 1536))


def best_time(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(m: int, k: int, sparsity: float, act: str, rounds: int) -> list[dict]:
    torch.manual_seed(0)
    w = torch.randn(m, k) * (torch.rand(m, k) >= sparsity)
    handle = pack_weight(compress(w, "int8"), torch.randn(m), act)
    rows = []
    for n in BATCHES:
        x = torch.randn(n, k)
        times = {"sparse": float("inf"), "dense": float("inf")}
        for _ in range(rounds):
            for mode, label in (("off", "sparse"), ("on", "dense")):
                with forced_dense_batches(mode):
                    linear(x, handle)  # warm: the dense copy is made on first use
                    times[label] = min(times[label], best_time(lambda x=x: linear(x, handle), 3))
        rows.append({"batch": n, **{f"{key}_ms": v * 1e3 for key, v in times.items()},
                     "sparse_over_dense": times["sparse"] / times["dense"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    results = []
    for act in ("none", "dynamic-int8"):
        for sparsity in (0.5, 0.7):
            for m, k in SHAPES:
                rows = measure(m, k, sparsity, act, args.rounds)
                results.append({"act": act, "sparsity": sparsity, "out_features": m, "in_features": k, "rows": rows})
                ratios = " ".join(f"{r['batch']}:{r['sparse_over_dense']:.2f}" for r in rows)
                print(f"{act:12s} {sparsity:.0%} {m}x{k}  sparse/dense {ratios}", flush=True)
    if args.out:
        meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": platform.processor() or platform.machine(),
                "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
                "timing": "best of rounds x 3 calls, sparse and dense interleaved per round"}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
