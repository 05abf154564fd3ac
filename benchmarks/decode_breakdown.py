"""Where a batch-1 decode step's time goes: the sparse Linear kernels alone vs the whole step.

For a compressed causal LM (or a dense one), prepared as `sparseft bench --prepared` does, this times:
- the whole decode step (`greedy_decode`, compiled, static cache), per token;
- every Linear layer's kernel called alone, at batch 1, once each in the model's order (SparseLinear: its
  packed kernel; nn.Linear: F.linear): what the step would cost with zero overhead;
- the bytes those layers read, and that over a measured read bandwidth (a torch.sum over a buffer of the
  weights' size): the bytes-bound limit the issue asks each model's distance to.

    python benchmarks/decode_breakdown.py smollm2-135m runs/smol-mag70-int8 --tokens 64   # dense = baseline
    python benchmarks/decode_breakdown.py smollm2-135m --no-compile
    python benchmarks/decode_breakdown.py smollm2-135m runs/smol-mag70-w8a8 --native   # the native C step

CPU time of the calling thread, best of `--rounds`; the models' steps are timed in interleaved rounds (a
busy neighbour slows all alike), the first model is the baseline of the speed-ups.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparseft.runtime import SparseLinear
from sparseft.runtime.fast_decode import greedy_decode, prepare_for_decode
from sparseft.runtime.native_decode import NativeDecoder
from sparseft.runtime.timing import bandwidth_gbs, best_times


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
    step calls it: weights stream from memory as in the step; seconds of each layer called alone over and
    over: its cache-hot cost). Thread CPU time, best of `rounds`."""
    layers = [(n, _call(m), torch.randn(1, 1, m.in_features)) for n, m in linear_layers(model)]
    with torch.no_grad():
        hot = {name: best_times({name: lambda c=call, v=x: c(v)}, seconds=0.05, rounds=rounds, clock="thread")[name]
               for name, call, x in layers}
        one_pass = best_times({"pass": lambda: [call(x) for _, call, x in layers]}, seconds=1.0,
                              rounds=rounds * 4, clock="thread")["pass"]
    return one_pass, hot


def decoder(model: nn.Module, path: str, max_positions: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """generate(ids, n) of `path`: "compiled" / "eager" greedy_decode, or "native" (one C call per step)."""
    if path == "native":
        return NativeDecoder(model, max_positions).generate
    return lambda ids, n: greedy_decode(model, ids, n, compile=path == "compiled")


def step_seconds(models: dict[str, nn.Module], tokens: int, rounds: int, path: str) -> dict[str, float]:
    """Seconds per decode step after the prompt of each model, measured in interleaved rounds: a run of
    `tokens` tokens minus a prompt-only run, over (tokens - 1) steps."""
    ids = torch.tensor([[1, 504, 3458, 314, 260, 2272, 282, 1622, 30]])
    fns = {}
    for name, model in models.items():
        run = decoder(model, path, ids.shape[1] + tokens)
        run(ids, 4)  # compile / warm up
        fns[(name, "full")] = lambda r=run: r(ids, tokens)
        fns[(name, "prompt")] = lambda r=run: r(ids, 1)
    best = best_times(fns, seconds=len(fns) * 2.0, rounds=rounds, clock="thread")
    return {name: (best[(name, "full")] - best[(name, "prompt")]) / (tokens - 1) for name in models}


def breakdown(name: str, model: nn.Module, step: float, rounds: int, path: str, tokens: int) -> dict:
    one_pass, hot = kernels_alone(model, rounds)
    nbytes = sum(layer_bytes(m) for _, m in linear_layers(model))
    bandwidth = bandwidth_gbs(max(nbytes >> 20, 1)) * 1e9  # a buffer the size of the weights
    record = {
        "model": name, "step_path": path, "threads": 1, "tokens": tokens,
        "step_ms": round(step * 1e3, 3), "linear_kernels_ms": round(one_pass * 1e3, 3),
        "linear_kernels_cache_hot_ms": round(sum(hot.values()) * 1e3, 3),
        "outside_kernels_ms": round((step - one_pass) * 1e3, 3),
        "weight_bytes": nbytes, "read_bandwidth_gbs": round(bandwidth / 1e9, 2),
        "bytes_bound_ms": round(nbytes / bandwidth * 1e3, 3),
        "slowest_layers_ms": {n: round(s * 1e3, 4) for n, s in sorted(hot.items(), key=lambda kv: -kv[1])[:6]},
    }  # fmt: skip
    record["step_vs_bytes_bound"] = round(record["step_ms"] / record["bytes_bound_ms"], 2)
    record["kernels_vs_bytes_bound"] = round(record["linear_kernels_ms"] / record["bytes_bound_ms"], 2)
    return record


def main() -> None:
    from sparseft.models import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="compressed folders (sparseft compress) or dense models; the first "
                                              "is the baseline of the speed-ups (e.g. the dense model)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="eager steps (fused projections only)")
    ap.add_argument("--native", action="store_true", help="the native step (runtime/native_decode.py: one C call "
                                                          "per token; Llama-family models)")
    ap.add_argument("--out", type=Path, help="write the records as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = "native" if args.native else "eager" if args.no_compile else "compiled"
    models = {}
    for name in args.models:
        models[name] = load_model(name).eval()
        prepare_for_decode(models[name], compile=path == "compiled")
    steps = step_seconds(models, args.tokens, args.rounds, path)
    baseline = args.models[0]
    records = []
    for name, model in models.items():
        record = breakdown(name, model, steps[name], args.rounds, path, args.tokens)
        record[f"step_speedup_vs_{baseline}"] = round(steps[baseline] / steps[name], 3)
        records.append(record)
        print(json.dumps(record, indent=2), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"interleaved_steps": True, "baseline": baseline, "records": records}, indent=2))


if __name__ == "__main__":
    main()
