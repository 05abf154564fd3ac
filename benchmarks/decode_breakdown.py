"""Where a batch-1 decode step's time goes: the sparse Linear kernels alone vs the whole step.

For a compressed causal LM (or a dense one), prepared as `sparseft bench --prepared` does, this times:
- the whole decode step (`greedy_decode`, compiled, static cache), per token;
- every Linear layer's kernel called alone, at batch 1, once each in the model's order (SparseLinear: its
  packed kernel; nn.Linear: F.linear): what the step would cost with zero overhead;
- the bytes those layers read, and that over a measured read bandwidth (a torch.sum over a buffer of the
  weights' size): the bytes-bound limit the issue asks each model's distance to.

    python benchmarks/decode_breakdown.py runs/smol-mag70-int8 --tokens 64
    python benchmarks/decode_breakdown.py smollm2-135m --no-compile

CPU time of the calling thread, best of `--rounds` (a busy neighbour inflates it less than wall time).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparseft.runtime import SparseLinear
from sparseft.runtime.fast_decode import greedy_decode, prepare_for_decode


def best_seconds(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


def layer_bytes(module: nn.Module) -> int:
    if isinstance(module, SparseLinear):
        return module.compressed().nbytes()
    return module.weight.numel() * module.weight.element_size()


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (SparseLinear, nn.Linear))]


def _call(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(layer, SparseLinear):
        return layer
    return lambda x, w=layer.weight, b=layer.bias: F.linear(x, w, b)


def kernels_alone(model: nn.Module, rounds: int) -> tuple[float, dict[str, float]]:
    """(seconds of one pass over every Linear layer in the model's order, batch 1, each called once as a
    step calls it: weights stream from memory as in the step; seconds of each layer called 20 times in a
    row: its cache-hot cost)."""
    layers = [(n, _call(m), torch.randn(1, 1, m.in_features)) for n, m in linear_layers(model)]
    hot = {}
    with torch.no_grad():
        for name, call, x in layers:
            call(x)
            hot[name] = best_seconds(lambda c=call, v=x: [c(v) for _ in range(20)], rounds) / 20
        one_pass = best_seconds(lambda: [call(x) for _, call, x in layers], rounds * 4)
    return one_pass, hot


def read_bandwidth(nbytes: int, rounds: int) -> float:
    """Bytes/s of torch.sum over a float32 buffer of `nbytes` (one read pass)."""
    buf = torch.ones(max(nbytes // 4, 1), dtype=torch.float32)
    return buf.numel() * 4 / best_seconds(lambda: buf.sum(), rounds)


def step_seconds(model: nn.Module, tokens: int, rounds: int, compile: bool) -> float:
    ids = torch.tensor([[1, 504, 3458, 314, 260, 2272, 282, 1622, 30]])
    greedy_decode(model, ids, 4, compile=compile)  # compile / warm up
    # (tokens - 1) steps after the prompt; the prompt step is subtracted with a 1-token run
    full = best_seconds(lambda: greedy_decode(model, ids, tokens, compile=compile), rounds)
    prompt = best_seconds(lambda: greedy_decode(model, ids, 1, compile=compile), rounds)
    return (full - prompt) / (tokens - 1)


def main() -> None:
    from sparseft.models import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a compressed folder (sparseft compress) or a dense model")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="eager steps (fused projections only)")
    ap.add_argument("--out", type=Path, help="write the record as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model).eval()
    prepare_for_decode(model, compile=not args.no_compile)
    step = step_seconds(model, args.tokens, args.rounds, not args.no_compile)
    one_pass, hot = kernels_alone(model, args.rounds)
    nbytes = sum(layer_bytes(m) for _, m in linear_layers(model))
    bandwidth = read_bandwidth(nbytes, args.rounds)
    record = {
        "model": args.model, "compiled": not args.no_compile, "threads": 1, "tokens": args.tokens,
        "step_ms": round(step * 1e3, 3), "linear_kernels_ms": round(one_pass * 1e3, 3),
        "linear_kernels_cache_hot_ms": round(sum(hot.values()) * 1e3, 3),
        "outside_kernels_ms": round((step - one_pass) * 1e3, 3),
        "weight_bytes": nbytes, "read_bandwidth_gbs": round(bandwidth / 1e9, 2),
        "bytes_bound_ms": round(nbytes / bandwidth * 1e3, 3),
        "slowest_layers_ms": {n: round(s * 1e3, 4) for n, s in sorted(hot.items(), key=lambda kv: -kv[1])[:6]},
    }  # fmt: skip
    record["step_vs_bytes_bound"] = round(record["step_ms"] / record["bytes_bound_ms"], 2)
    record["kernels_vs_bytes_bound"] = round(record["linear_kernels_ms"] / record["bytes_bound_ms"], 2)
    print(json.dumps(record, indent=2))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
