"""End to end: SmolLM2-135M greedy decoding, dense fp32 vs magnitude-pruned sparse models, eager and prepared.

    OMP_WAIT_POLICY=passive python benchmarks/bench_e2e.py --threads 1 2            # full run (~1 h)
    python benchmarks/bench_e2e.py --table benchmarks/results/e2e.json              # markdown table

Models: dense fp32, and the model pruned to 50% / 70% (per-row magnitude, every Linear of the transformer
blocks) in each value type, plus 70% with the (tied, unpruned) lm_head also stored in the value type: it
is 576 x 49152, a fifth of the model's weight bytes, and dominates a sparse model's decode otherwise;
and "w8a8 + int8 lm_head" at 50% / 70%: the blocks on the W8A8 kernel (int8 weights on per-row scales,
activations quantized per token).

Each model runs in two modes, batch 1, --tokens new tokens after the same prompt:
- "eager": the model as converted, ``model.generate`` (HF dynamic cache, eager PyTorch);
- "prepared": a copy after ``prepare_for_decode`` (q/k/v and gate/up fused, static KV cache, the decoder
  step compiled once by torch.compile/inductor), decoded with ``greedy_decode`` (``--api generate``:
  ``model.generate``). The dense model prepared the same way is the fair baseline of prepared sparse ones.

Timing: all (model, mode) pairs run in interleaved rounds; medians over --rounds of the wall time and of
the CPU time (1 thread: the main thread's; 2 threads: the process's, i.e. the work of both threads). Time
outside the Linear layers: the same decode with every Linear replaced by a stub that returns zeros (the
"stub" rows), as a fraction of each model's token time in the same mode.
Results: benchmarks/results/e2e.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sparseft.models import load_model, load_tokenizer
from sparseft.runtime import SparseLinear, set_num_threads, sparsify_model
from sparseft.runtime.convert import Int8Spec
from sparseft.runtime.fast_decode import greedy_decode, prepare_for_decode
from sparseft.runtime.fusion import fuse_projections

RESULTS = Path(__file__).parent / "results"
PROMPT = "The history of the printing press begins"
BASELINE = "dense fp32"

_lib = torch.library.Library("sparseft_bench", "DEF")
_lib.define("zeros_linear(Tensor x, int out_features) -> Tensor")
_lib.impl("zeros_linear", lambda x, m: x.new_zeros(*x.shape[:-1], m), "CPU")
torch.library.register_fake("sparseft_bench::zeros_linear")(lambda x, m: x.new_empty(*x.shape[:-1], m))


class StubLinear(nn.Module):
    """A Linear that costs nothing but its call: returns zeros (an opaque op, so inductor keeps it)."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.sparseft_bench.zeros_linear(x, self.out_features)


def block_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The Linear layers of the transformer blocks (the ones pruned)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in n]


def row_scales(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 scales, one per output row (max |w| / 127)."""
    return weight.abs().amax(dim=1).clamp_min(1e-12) / 127


@torch.no_grad()
def prune_rows(model: nn.Module, sparsity: float) -> None:
    """Zero the smallest-magnitude ``sparsity`` fraction of each row of every block Linear."""
    for _, mod in block_linears(model):
        w = mod.weight
        k = int(w.shape[1] * sparsity)
        idx = w.abs().argsort(dim=1)[:, :k]
        w.scatter_(1, idx, 0.0)


def stubbed(base: nn.Module, fuse: bool) -> nn.Module:
    """A copy of ``base`` whose Linear layers (after fusing, if ``fuse``) are StubLinear."""
    model = copy.deepcopy(base)
    if fuse:
        fuse_projections(model)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, (nn.Linear, SparseLinear)):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, StubLinear(mod.out_features))
    return model


def variants(base: nn.Module, only: list[str] | None) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """({name: model} to time, {sparsity: masked dense model} for the greedy-token check)."""
    out, masked = {BASELINE: base}, {}
    for sp in (0.5, 0.7):
        pruned = copy.deepcopy(base)
        prune_rows(pruned, sp)
        masked[f"{sp:.0%}"] = pruned
        for fmt in ("fp32", "bf16", "int8"):
            m = copy.deepcopy(pruned)
            sparsify_model(m, fmt)
            out[f"{sp:.0%} {fmt}"] = m
            if sp == 0.7 and fmt != "fp32":
                h = copy.deepcopy(m)
                h.lm_head = SparseLinear.from_dense(h.lm_head, fmt)
                out[f"{sp:.0%} {fmt} + {fmt} lm_head"] = h
        # W8A8: int8 weights on their per-row scales, activations quantized per token (VNNI integer kernel)
        w8 = copy.deepcopy(pruned)
        sparsify_model(w8, "int8", int8={n: Int8Spec(row_scales(m.weight), "dynamic-int8") for n, m in block_linears(w8)})
        w8.lm_head = SparseLinear.from_dense(w8.lm_head, "int8")
        out[f"{sp:.0%} w8a8 + int8 lm_head"] = w8
    if only:
        out = {k: v for k, v in out.items() if k == BASELINE or k in only}
    return out, masked


def decoder(
    model: nn.Module, ids: torch.Tensor, tokens: int, mode: str, api: str
) -> Callable[[], torch.Tensor]:
    """A function decoding ``tokens`` greedy tokens after ``ids`` with ``model`` in ``mode``."""
    if mode == "eager" or api == "generate":
        kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return lambda: model.generate(ids, **kw)
    return lambda: greedy_decode(model, ids, tokens)


def timed(
    fn: Callable[[], torch.Tensor], cpu_clock: Callable[[], float]
) -> tuple[float, float, torch.Tensor]:
    t0, c0 = time.perf_counter(), cpu_clock()
    out = fn()
    return time.perf_counter() - t0, cpu_clock() - c0, out


def build_runs(args: argparse.Namespace, base: nn.Module, ids: torch.Tensor) -> tuple[dict, dict, dict]:
    """({(name, mode): decode fn}, {(name, mode): compile seconds}, {name: masked dense tokens})."""
    models, masked = variants(base, args.variants)
    models["stub"] = stubbed(base, fuse=False)
    runs, compile_s = {}, {}
    length = ids.shape[1] + args.tokens
    for name, model in models.items():
        if "eager" in args.modes:
            runs[(name, "eager")] = decoder(model, ids, args.tokens, "eager", args.api)
        if "prepared" in args.modes:
            prep = stubbed(base, fuse=True) if name == "stub" else copy.deepcopy(model)
            prepare_for_decode(prep, fuse=name != "stub", max_cache_len=length, dynamic=args.dynamic)
            fn = decoder(prep, ids, args.tokens, "prepared", args.api)
            t0 = time.perf_counter()
            fn()  # compiles
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn()
            compile_s[name] = first - (time.perf_counter() - t0)
            print(f"{name}: compiled in {compile_s[name]:.0f} s", flush=True)
            runs[(name, "prepared")] = fn
    kw = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
    ref_tokens = {sp: m.generate(ids, **kw)[0, ids.shape[1] :].tolist() for sp, m in masked.items()}
    return runs, compile_s, ref_tokens


def measure(runs: dict, threads: int, rounds: int) -> dict:
    """{(name, mode): (median wall s, median CPU s, tokens)} over interleaved rounds."""
    torch.set_num_threads(threads)
    set_num_threads(threads)
    clock = time.thread_time if threads == 1 else time.process_time
    samples: dict = {key: [] for key in runs}
    for fn in runs.values():  # warm up at this thread count
        fn()
    for r in range(rounds):
        for key, fn in runs.items():
            wall, cpu, out = timed(fn, clock)
            samples[key].append((wall, cpu, out))
        print(f"  round {r + 1}/{rounds} done", flush=True)
    return {
        k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v), v[-1][2][0].tolist())
        for k, v in samples.items()
    }


def records(
    meas: dict, threads: int, tokens: int, prompt_len: int, ref_tokens: dict, compile_s: dict
) -> list[dict]:
    """One record per (model, mode), with ratios to the dense eager and the dense prepared model."""
    out = []
    base = {mode: meas.get((BASELINE, mode)) for mode in ("eager", "prepared")}
    for (name, mode), (wall, cpu, toks) in meas.items():
        stub = meas.get(("stub", mode))
        rec = {"model": name, "mode": mode, "threads": threads, "tokens_per_s": tokens / wall,
               "tokens_per_s_cpu": tokens / cpu, "cpu_clock": "thread" if threads == 1 else "process"}  # fmt: skip
        for ref_mode, ref in base.items():
            if ref is not None:
                rec[f"vs_dense_{ref_mode}"] = ref[0] / wall
                rec[f"vs_dense_{ref_mode}_cpu"] = ref[1] / cpu
        if stub is not None and name != "stub":
            rec["outside_linear_fraction"] = min(
                1.0, (stub[1] if threads == 1 else stub[0]) / (cpu if threads == 1 else wall)
            )
        new = toks[prompt_len:]
        key = name.split(" ")[0]
        if key in ref_tokens and name != "stub":
            rec["same_tokens_as_masked_dense"] = (
                sum(a == b for a, b in zip(new, ref_tokens[key], strict=False)) / tokens
            )
        if mode == "prepared":
            eager = meas.get((name, "eager"))
            if eager is not None:
                rec["same_tokens_as_eager"] = (
                    sum(a == b for a, b in zip(new, eager[2][prompt_len:], strict=False)) / tokens
                )
            if name in compile_s:
                rec["compile_s"] = compile_s[name]
        rec["tokens"] = new
        out.append(rec)
    return out


def table(data: dict) -> str:
    """The markdown table of BENCHMARKS.md from a results file."""
    head = ("| threads | model | mode | tokens/s wall | tokens/s CPU | vs dense eager (wall / CPU) | "
            "vs dense prepared (wall / CPU) | time outside Linear | same tokens as masked dense / as eager |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def pair(r: dict, k: str) -> str:
        return f"{r[k]:.2f}x / {r[k + '_cpu']:.2f}x" if k in r else ""

    def pct(r: dict, k: str) -> str:
        return f"{r[k]:.0%}" if k in r else "-"

    for r in data["results"]:
        lines.append(
            f"| {r['threads']} | {r['model']} | {r['mode']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s_cpu']:.1f} | "
            f"{pair(r, 'vs_dense_eager')} | {pair(r, 'vs_dense_prepared')} | {pct(r, 'outside_linear_fraction')} | "
            f"{pct(r, 'same_tokens_as_masked_dense')} / {pct(r, 'same_tokens_as_eager')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    ap.add_argument("--modes", nargs="+", default=["eager", "prepared"], choices=["eager", "prepared"])
    ap.add_argument(
        "--api", default="greedy", choices=["greedy", "generate"], help="decode API of prepared models"
    )
    ap.add_argument("--variants", nargs="*", default=None, help='only these sparse models, e.g. "70%% int8"')
    ap.add_argument(
        "--dynamic", action="store_true", help="torch.compile(dynamic=True) instead of fixed shapes"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "e2e.json")
    ap.add_argument("--merge", action="store_true", help="keep the other thread counts' results in --out")
    ap.add_argument(
        "--table", type=Path, default=None, help="print the markdown table of a results file and exit"
    )
    args = ap.parse_args()
    if args.table is not None:
        print(table(json.loads(args.table.read_text())))
        return
    torch._dynamo.config.recompile_limit = 64  # every prepared model compiles the same forward code
    torch._dynamo.config.accumulated_recompile_limit = 1024
    torch.set_num_threads(1)
    set_num_threads(1)
    base = load_model("smollm2-135m", "float32")
    ids = load_tokenizer("smollm2-135m")(PROMPT, return_tensors="pt").input_ids
    runs, compile_s, ref_tokens = build_runs(args, base, ids)
    meta = {"model": "smollm2-135m", "tokens": args.tokens, "batch": 1, "prompt": PROMPT, "api": args.api,
            "dynamic": args.dynamic, "timing": f"medians of {args.rounds} interleaved rounds", "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    kept = []
    if args.merge and args.out.exists():  # results of other thread counts from an earlier run
        kept = [r for r in json.loads(args.out.read_text())["results"] if r["threads"] not in args.threads]
    results = []
    for threads in args.threads:
        meas = measure(runs, threads, args.rounds)
        new = records(meas, threads, args.tokens, ids.shape[1], ref_tokens, compile_s)
        for r in new:
            print(f"t={threads} {r['model']:28s} {r['mode']:8s} {r['tokens_per_s']:6.1f} tok/s wall "
                  f"{r['tokens_per_s_cpu']:6.1f} CPU  {r.get('vs_dense_eager_cpu', 0):5.2f}x eager(CPU)  "
                  f"{r.get('vs_dense_prepared_cpu', 0):5.2f}x prepared(CPU)  outside {r.get('outside_linear_fraction', 0):.0%}", flush=True)  # fmt: skip
        results += new
        # written after each thread count, so that a run stopped later keeps what it measured
        write_json(args.out, meta, sorted(kept + results, key=lambda r: r["threads"]))


def write_json(path: Path, meta: dict, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    tmp.replace(path)
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
