"""The native decode step at 1 and at 2 threads, interleaved: how a second core scales one model's step.

    OMP_WAIT_POLICY=passive python benchmarks/native_threads.py runs/smol-mag70-w8a8-h4 [--rounds 7 --steps 64]

Per round, each thread count runs a 12-token prompt and then `--steps` greedy steps of the native step
(runtime/native_decode.py); the record is the milliseconds per step of every round, the best of each count
and their ratio, with the read bandwidth (torch.sum over 256 MB) probed at 1 and 2 threads before and after.
The prompt is not timed. Writes JSON to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sparseft.runtime.checkpoint import load_compressed
from sparseft.runtime.native_decode import NativeDecoder
from sparseft.runtime.timing import bandwidth_gbs

PROMPT = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 23, 45, 67, 89, 12]])


def step_ms(decoder: NativeDecoder, threads: int, steps: int) -> float:
    """Milliseconds per greedy step after the prompt, at ``threads``."""
    token = decoder.prefill(PROMPT, threads)
    start = time.perf_counter()
    for i in range(steps):
        token = decoder.step(token, PROMPT.shape[1] + i, threads)
    return (time.perf_counter() - start) / steps * 1e3


def probe() -> dict[str, float]:
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[f"bandwidth_gbs_t{threads}"] = round(bandwidth_gbs(), 1)
    torch.set_num_threads(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a compressed checkpoint folder (or any folder load_compressed reads)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    decoder = NativeDecoder(load_compressed(args.model), max_positions=PROMPT.shape[1] + args.steps)
    record = {"model": args.model, "steps": args.steps, "probe_before": probe()}
    for threads in (1, 2):
        step_ms(decoder, threads, 8)  # warm: the pool's worker starts, caches fill
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for threads in (1, 2):
            times[threads].append(round(step_ms(decoder, threads, args.steps), 3))
    record |= {"step_ms": times, "best_ms": {t: min(v) for t, v in times.items()}, "probe_after": probe()}
    record["two_vs_one"] = round(record["best_ms"][1] / record["best_ms"][2], 3)
    print(json.dumps(record, indent=1))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
