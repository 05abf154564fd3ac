"""End to end: SmolLM2-135M greedy decoding, dense fp32 vs magnitude-pruned sparse models.

    OMP_WAIT_POLICY=passive python benchmarks/bench_e2e.py --threads 1 2

For each thread count: tokens/s of 128 greedy new tokens (batch 1) for the dense fp32 model and for the
model pruned to 50% / 70% (per-row magnitude, every Linear of the transformer blocks) in each value type,
plus 70% with the (tied, unpruned) lm_head also stored in the value type — the lm_head is 576 x 49152,
a fifth of the model's weight bytes, and dominates a sparse model's decode otherwise. It also splits a
token's time into Linear layers vs everything else (attention, norms, sampling, Python).
Results: benchmarks/results/e2e.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

from sparseft.models import load_model, load_tokenizer
from sparseft.runtime import SparseLinear, set_num_threads, sparsify_model

RESULTS = Path(__file__).parent / "results"
PROMPT = "The history of the printing press begins"


@torch.no_grad()
def prune_rows(model: nn.Module, sparsity: float) -> None:
    """Zero the smallest-magnitude ``sparsity`` fraction of each row of every block Linear."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and ".layers." in name:
            w = mod.weight
            k = int(w.shape[1] * sparsity)
            idx = w.abs().argsort(dim=1)[:, :k]
            w.scatter_(1, idx, 0.0)


class LinearTimer:
    """Forward hooks that add up the time spent inside Linear / SparseLinear modules."""

    def __init__(self, model: nn.Module) -> None:
        self.total = 0.0
        self.handles = []
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, SparseLinear)):
                self.handles.append(mod.register_forward_pre_hook(self._pre))
                self.handles.append(mod.register_forward_hook(self._post))

    def _pre(self, *_: object) -> None:
        self.t0 = time.perf_counter()

    def _post(self, *_: object) -> None:
        self.total += time.perf_counter() - self.t0

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def decode(
    model: nn.Module, ids: torch.Tensor, tokens: int, repeats: int
) -> tuple[float, float, list[int], float]:
    """(best tokens/s by wall clock, by the main thread's CPU time, generated ids, fraction in Linear)."""
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    model.generate(ids, **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        out = model.generate(ids, **kw)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.thread_time() - c0)
    timer = LinearTimer(model)
    t0 = time.perf_counter()
    model.generate(ids, **kw)
    frac = timer.total / (time.perf_counter() - t0)
    timer.remove()
    return tokens / best, tokens / best_cpu, out[0, ids.shape[1] :].tolist(), frac


def variants(base: nn.Module) -> dict[str, nn.Module]:
    """The dense model and every sparse variant, built from the same weights."""
    out = {"dense fp32": base}
    for sp in (0.5, 0.7):
        pruned = copy.deepcopy(base)
        prune_rows(pruned, sp)
        for fmt in ("fp32", "bf16", "int8"):
            m = copy.deepcopy(pruned)
            sparsify_model(m, fmt)
            out[f"{sp:.0%} {fmt}"] = m
            if sp == 0.7 and fmt != "fp32":
                h = copy.deepcopy(m)
                h.lm_head = SparseLinear.from_dense(h.lm_head, fmt)
                out[f"{sp:.0%} {fmt} + {fmt} lm_head"] = h
        out[f"{sp:.0%} masked dense fp32"] = pruned
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "e2e.json")
    args = ap.parse_args()
    base = load_model("smollm2-135m", "float32")
    ids = load_tokenizer("smollm2-135m")(PROMPT, return_tensors="pt").input_ids
    models = variants(base)
    records = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        set_num_threads(threads)
        ref_tps = ref_cpu = None
        ref_tokens = {}
        for name, model in models.items():
            tps, cpu_tps, toks, frac = decode(model, ids, args.tokens, args.repeats)
            ref_tps, ref_cpu = ref_tps or tps, ref_cpu or cpu_tps
            key = name.split(" ")[0]
            if "masked" in name:
                ref_tokens[key] = toks
            rec = {"model": name, "threads": threads, "tokens_per_s": tps, "speedup_vs_dense_fp32": tps / ref_tps,
                   "linear_time_fraction": frac, "tokens": toks}  # fmt: skip
            if threads == 1:  # CPU time of the only thread: leaves out waits for a CPU busy with other jobs
                rec.update(tokens_per_s_cpu=cpu_tps, speedup_vs_dense_fp32_cpu=cpu_tps / ref_cpu)
            records.append(rec)
            print(
                f"t={threads} {name:28s} {tps:7.1f} tok/s  {tps / ref_tps:5.2f}x  linear {frac:.0%}",
                flush=True,
            )
        for rec in records:  # greedy tokens vs the masked dense model with the same sparsity
            key = rec["model"].split(" ")[0]
            if rec["threads"] == threads and key in ref_tokens and "masked" not in rec["model"]:
                same = sum(a == b for a, b in zip(rec["tokens"], ref_tokens[key], strict=False))
                rec["same_tokens_as_masked_dense"] = same / len(rec["tokens"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": "smollm2-135m", "tokens": args.tokens, "batch": 1, "prompt": PROMPT,
            "timing": f"wall clock, best of {args.repeats} generate() calls", "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "results": records}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
