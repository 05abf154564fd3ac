"""INT8 that keeps sparsity on SmolLM2-135M: held-out perplexity, end-to-end decode speed, W8A8 kernels.

    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage accuracy   # ~40 min on 1 busy core
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage accuracy --no-sensitivity \
        --runtime --key heldout100                                               # + rows on the real kernels
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage speed --threads 1 2 --tokens 128
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage kernels    # W8A8 vs int8 vs torch
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage divergence # runtime vs fake-quant
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage groups     # a few minutes
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage head --texts 50   # int8 lm_head ppl

accuracy: perplexity on the 100 original GSM problems (held out: calibration uses generated variants) of
dense fp32, dense int8 (w8a16 weight-only; w8a8 with dynamic per-token activations), 50% sparse fp32
(SparseGPT, calibrated on GSM variants) and the same sparse model in int8; plus the per-layer
sensitivity report, W8A8 with the most sensitive layers (by the report) left in fp32, and W8A8 with the
down-projections in fp32 or weight-only int8. --runtime adds the 50% sparse int8 models run on the
runtime's kernels (`compress_quantized`: W8A8 layers on the VNNI W8A8 kernel), to show that the compiled
model scores what the fake-quant one does.
speed: greedy decode tokens/s at batch 1 of dense fp32, torch dense int8 (`quantize_dynamic`, every
Linear incl. lm_head), dense W8A8 on the runtime, and 50% / 70% sparse models on the runtime: w8a16
(int8 values, fp32 activations), w8a8 (int8 activations per token, VNNI kernel), w8a8 with the
down-projections in fp32 (sparse fp32 values) or weight-only int8, with the tied lm_head in fp32 and/or as
a (dense) int8 SparseLinear; all
in the same process, every thread count in the same run, round-robin over models.
kernels: one layer, 4096x4096 and 11008x4096 at 70%, batch 1 and 16: torch fp32, torch int8
(quantize_dynamic), the runtime's weight-only int8 kernel and its W8A8 kernel.
divergence: the runtime's W8A8 model vs the fake-quant one (per layer and logits), next to the fake-quant
model's own sensitivity to a 1e-7 relative perturbation (dynamic int8 activations make it chaotic).
groups: loss increase on calibration windows when one kind of layer (all q_proj, ..., all down_proj)
is W8A8-quantized alone, dense and 50% sparse (`group_loss_sensitivity`).
Results merge into benchmarks/results/quant_smollm2.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from sparseft.data import gsm_problems, load_texts
from sparseft.data.calibration import calibration_batches
from sparseft.evaluate.perplexity import perplexity
from sparseft.models import load_model, load_tokenizer
from sparseft.prune.driver import oneshot
from sparseft.quant import (
    compress_quantized,
    group_loss_sensitivity,
    layer_sensitivity,
    quantize_model,
    runtime_int8_specs,
)

RESULTS = Path(__file__).parent / "results" / "quant_smollm2.json"
DOWN = r"mlp\.down_proj$"
# Quantization plans: (scheme, targets, ignore) steps applied in order to one model.
PLANS = {
    "w8a16": [("w8a16", None, None)],
    "w8a8": [("w8a8", None, None)],
    "w8a8, down_proj in fp32": [("w8a8", None, [DOWN])],
    "w8a8, down_proj w8a16": [("w8a8", None, [DOWN]), ("w8a16", [DOWN], None)],
}
PROMPT = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def quantize_plan(model: nn.Module, plan: str, masks=None) -> dict:
    """Fake-quantize `model` in place by PLANS[plan]; returns the runtime specs of every quantized layer
    (activation hooks stay attached until `compress_quantized`)."""
    specs = {}
    for scheme, targets, ignore in PLANS[plan]:
        specs |= runtime_int8_specs(quantize_model(model, scheme, targets=targets, ignore=ignore, masks=masks))
    return specs


def on_runtime(model: nn.Module, specs: dict, masks=None, int8_head: bool = False) -> nn.Module:
    """The fake-quantized `model` moved onto the runtime's kernels (in place): int8 layers with their exact
    values and scales, W8A8 layers on the W8A8 kernel; `int8_head`: the tied lm_head too, as a dense
    weight-only int8 SparseLinear (untied: the embedding stays fp32)."""
    from sparseft.runtime import SparseLinear

    for module in model.modules():  # the fake-quant activation hooks: the kernels quantize themselves
        module._forward_pre_hooks.clear()
    compress_quantized(model, specs, masks=masks)
    if int8_head:
        model.lm_head = SparseLinear.from_dense(model.lm_head, "int8")
    return model


def sparse_model(base: nn.Module, batches, sparsity: float, cache: Path) -> tuple[nn.Module, dict]:
    """SparseGPT-pruned copy of `base` and its masks, cached on disk (pruning is the slow part)."""
    model = copy.deepcopy(base)
    if cache.is_file():
        saved = torch.load(cache)
        model.load_state_dict(saved["state"], strict=False)
        return model, saved["masks"]
    report = oneshot(model, batches, method="sparsegpt", sparsity=sparsity, progress=False)
    log(f"SparseGPT {sparsity:.0%}: {report.total_sparsity:.2%} in {report.seconds:.0f} s")
    pruned = {k: v for k, v in model.state_dict().items() if any(k.startswith(n + ".") for n in report.masks)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": pruned, "masks": report.masks}, cache)
    return model, report.masks


def accuracy(args: argparse.Namespace) -> dict:
    tok = load_tokenizer("smollm2-135m")
    base = load_model("smollm2-135m", "float32")
    texts = [p.text for p in gsm_problems()][: args.texts]
    batches = calibration_batches(tok, load_texts("gsm", "calibration"), nsamples=args.calib_samples, seqlen=args.seqlen,
                                  batch_size=4)  # fmt: skip
    sens_batches = batches[: args.sens_batches]
    rows: dict[str, dict] = {}

    def measure(label: str, model: nn.Module, **extra) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            ppl = perplexity(model, tok, texts)
        rows[label] = {"perplexity": ppl, **extra}
        log(f"{label:50s} ppl {ppl:.4f}  ({time.perf_counter() - t0:.0f} s)")
        return ppl

    def quantized(label: str, src: nn.Module, plan: str, ref: float, masks=None, runtime: bool = False) -> None:
        model = copy.deepcopy(src)
        specs = quantize_plan(model, plan, masks)
        if runtime:
            on_runtime(model, specs, masks)
        ppl = measure(label, model, plan=PLANS[plan], quantized_layers=len(specs), runtime_kernels=runtime)
        rows[label]["vs_fp32"] = ppl / ref - 1

    sensitivity = {}
    for kind in ("dense", "sparse50"):
        if kind == "dense":
            src, masks = base, None
        else:
            src, masks = sparse_model(base, batches, 0.5, args.work / "sparsegpt50.pt")
        ref = measure(f"{kind} fp32", src)
        for plan in PLANS:
            quantized(f"{kind} {plan}", src, plan, ref, masks)
        if args.sensitivity:
            report = layer_sensitivity(src, sens_batches, masks=masks)
            sensitivity[kind] = report.as_dict()["layers"]
            log(f"{kind} sensitivity (worst first):\n" + report.format(max_rows=8))
            names = [f"^{r.name.replace('.', '[.]')}$" for r in report.layers[: args.keep_fp]]
            PLANS[f"w8a8, {args.keep_fp} most sensitive in fp32"] = [("w8a8", None, names)]
            quantized(f"{kind} w8a8, {args.keep_fp} most sensitive in fp32", src,
                      f"w8a8, {args.keep_fp} most sensitive in fp32", ref, masks)  # fmt: skip
        if args.runtime and kind == "sparse50":
            for plan in ("w8a16", "w8a8", "w8a8, down_proj w8a16"):
                quantized(f"{kind} {plan} on the runtime kernels", src, plan, ref, masks, runtime=True)
    settings = {"heldout": f"first {args.texts} of the 100 original GSM problems (question + worked answer)",
                "eval_seqlen": 512, "calibration": f"{args.calib_samples} x {args.seqlen} tokens of GSM variants",
                "pruning": "SparseGPT 50% uniform, every Linear in the blocks (lm_head/embeddings dense)",
                "quantized_layers": "every Linear in the blocks unless the plan says otherwise; lm_head (tied "
                                    "to embeddings) stays fp32",
                "weights": "int8 symmetric per output channel (round to nearest)",
                "w8a8_activations": "int8 dynamic per token",
                "runtime_kernels": "rows marked so ran on sparseft.runtime (compress_quantized): int8 values "
                                   "and scales of the fake-quant model, W8A8 layers on the VNNI W8A8 kernel",
                "sensitivity_batches": f"{args.sens_batches} x 4 x {args.seqlen} tokens" if args.sensitivity else None,
                "threads": torch.get_num_threads()}  # fmt: skip
    return {args.key: {"settings": settings, "perplexity": rows, "sensitivity": sensitivity}}


def generate(model: nn.Module, ids: torch.Tensor, tokens: int) -> tuple[float, float, list[int]]:
    """(wall seconds, main-thread CPU seconds, new token ids) of one greedy generate() of `tokens` tokens."""
    t0, c0 = time.perf_counter(), time.thread_time()
    out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return time.perf_counter() - t0, time.thread_time() - c0, out[0, ids.shape[1] :].tolist()


def decode_all(models: dict[str, nn.Module], ids: torch.Tensor, tokens: int, repeats: int):
    """Best wall and CPU seconds and tokens per model; rounds go over every model in turn, so a burst of
    load from other processes hits all models alike instead of one."""
    for model in models.values():
        generate(model, ids, 4)  # warm-up
    best = dict.fromkeys(models, float("inf"))
    best_cpu = dict.fromkeys(models, float("inf"))
    toks: dict[str, list[int]] = {}
    for _ in range(repeats):
        for name, model in models.items():
            seconds, cpu, toks[name] = generate(model, ids, tokens)
            best[name], best_cpu[name] = min(best[name], seconds), min(best_cpu[name], cpu)
    return best, best_cpu, toks


def speed_models(base: nn.Module, batches, args: argparse.Namespace, ids: torch.Tensor, tokens: int):
    """(name -> model timed, name -> greedy tokens of the fake-quant model it should reproduce)."""
    from sparseft.prune import magnitude_prune

    torch.backends.quantized.engine = "x86"
    models: dict[str, nn.Module] = {"dense fp32": base}
    models["dense int8 (torch quantize_dynamic)"] = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8
    )
    twins: dict[str, list[int]] = {}

    def add(name: str, src: nn.Module, plan: str, masks, heads=(False, True)) -> None:
        fake = copy.deepcopy(src)
        specs = quantize_plan(fake, plan, masks)
        with torch.no_grad():
            twin = generate(fake, ids, tokens)[2]  # the fake-quant model's greedy tokens (torch dense)
        for head in heads:
            label = f"{name} {plan}" + (" + int8 lm_head" if head else "")
            models[label] = on_runtime(copy.deepcopy(fake), specs, masks, int8_head=head)
            if not head:
                twins[label] = twin
        log(f"built {name} {plan}")

    add("dense", base, "w8a8", None, heads=(False,))
    for sp in (0.5, 0.7):
        if sp == 0.5:
            pruned, masks = sparse_model(base, batches, 0.5, args.work / "sparsegpt50.pt")
        else:  # speed does not depend on which weights are kept; magnitude saves a SparseGPT run
            pruned = copy.deepcopy(base)
            masks = magnitude_prune(pruned, sp)
        for plan in ("w8a16", "w8a8"):
            add(f"{sp:.0%} sparse", pruned, plan, masks)
        for plan in ("w8a8, down_proj in fp32", "w8a8, down_proj w8a16"):
            add(f"{sp:.0%} sparse", pruned, plan, masks, heads=(True,))
    return models, twins


def speed(args: argparse.Namespace) -> dict:
    from sparseft.runtime import best_isa, set_num_threads

    tok = load_tokenizer("smollm2-135m")
    base = load_model("smollm2-135m", "float32")
    batches = calibration_batches(tok, load_texts("gsm", "calibration"), nsamples=args.calib_samples, seqlen=args.seqlen,
                                  batch_size=4)  # fmt: skip
    ids = tok(PROMPT, return_tensors="pt").input_ids
    models, twins = speed_models(base, batches, args, ids, args.tokens)
    rows: dict[str, dict] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        set_num_threads(threads)
        with torch.no_grad():
            best, best_cpu, tokens = decode_all(models, ids, args.tokens, args.repeats)
        ref, ref_cpu = args.tokens / best["dense fp32"], args.tokens / best_cpu["dense fp32"]
        int8_ref = args.tokens / best["dense int8 (torch quantize_dynamic)"]
        int8_cpu = args.tokens / best_cpu["dense int8 (torch quantize_dynamic)"]
        for name in models:
            tps, cpu_tps = args.tokens / best[name], args.tokens / best_cpu[name]
            row = {"tokens_per_s": tps, "vs_dense_fp32": tps / ref, "vs_torch_dense_int8": tps / int8_ref}
            if threads == 1:  # the main thread does all the work: its CPU time leaves out waits for a busy CPU
                row |= {"tokens_per_s_cpu": cpu_tps, "vs_dense_fp32_cpu": cpu_tps / ref_cpu,
                        "vs_torch_dense_int8_cpu": cpu_tps / int8_cpu}  # fmt: skip
            if name in twins:
                same = sum(a == b for a, b in zip(tokens[name], twins[name], strict=True)) / args.tokens
                row["same_greedy_tokens_as_fake_quant"] = same
            rows.setdefault(name, {})[f"threads_{threads}"] = row
            log(f"t={threads} {name:50s} {tps:7.1f} tok/s  {tps / ref:5.2f}x fp32  {tps / int8_ref:5.2f}x torch int8"
                + (f"  (cpu {cpu_tps / ref_cpu:5.2f}x / {cpu_tps / int8_cpu:5.2f}x)" if threads == 1 else ""))  # fmt: skip
    settings = {"new_tokens": args.tokens, "batch": 1, "greedy": True, "threads": args.threads,
                "timing": f"best of {args.repeats} generate() calls per model, round-robin over models, one "
                          "process; wall clock, and for 1 thread also the main thread's CPU time",
                "prompt_tokens": int(ids.shape[1]), "isa": best_isa(), "OMP_WAIT_POLICY": "passive",
                "50%": "SparseGPT masks (same model as the accuracy table)", "70%": "per-layer magnitude masks",
                "w8a16": "int8 values (per channel) x fp32 activations (int8 kernel, x at 16 bits inside)",
                "w8a8": "int8 values x int8 activations quantized per token (VNNI W8A8 kernel)",
                "int8 lm_head": "the tied 576x49152 lm_head as a dense weight-only int8 SparseLinear",
                "torch_int8": "quantize_dynamic(model, {nn.Linear}, qint8): every Linear incl. lm_head"}  # fmt: skip
    return {"speed": {"settings": settings, "decode": rows}}


def kernel_point(w: torch.Tensor, ws: torch.Tensor, batch: int, seconds: float, clock: str) -> dict:
    """ms of y = x W^T for one weight (dense `w`, 70% sparse `ws`) and batch, every candidate interleaved."""
    import torch.nn.functional as F

    from sparseft.runtime import compress, linear, pack_weight
    from sparseft.runtime.timing import best_times

    m, k = w.shape
    cw = compress(ws, "int8")
    weight_only, w8a8 = pack_weight(cw), pack_weight(cw, act="dynamic-int8")  # packed once, as layers do
    lin = nn.Linear(k, m, bias=False)
    lin.weight.data.copy_(w)
    q8 = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
    x = torch.randn(batch, k)
    fns = {
        "torch_fp32": lambda: F.linear(x, w),
        "torch_int8": lambda: q8(x),
        "sparse_int8_weight_only": lambda: linear(x, weight_only),
        "sparse_w8a8": lambda: linear(x, w8a8),
    }
    t = best_times(fns, seconds=seconds, rounds=9, clock=clock)
    return {"ms": {n: 1e3 * v for n, v in t.items()},
            "vs_torch_fp32": {n: t["torch_fp32"] / v for n, v in t.items()},
            "vs_torch_int8": {n: t["torch_int8"] / v for n, v in t.items()},
            "vs_sparse_int8_weight_only": {n: t["sparse_int8_weight_only"] / v for n, v in t.items()}}  # fmt: skip


def kernels(args: argparse.Namespace) -> dict:
    """One layer at 70%: torch fp32, torch dense int8, sparse weight-only int8, sparse W8A8."""
    from sparseft.runtime import set_num_threads
    from sparseft.runtime.kernels import best_isa

    torch.backends.quantized.engine = "x86"
    records = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        set_num_threads(threads)
        clock = "thread" if threads == 1 else "wall"
        for m, k in ((4096, 4096), (11008, 4096)):
            g = torch.Generator().manual_seed(m)
            w = torch.randn(m, k, generator=g) / k**0.5
            ws = w * (torch.rand(m, k, generator=g) >= 0.7)
            for batch in (1, 16):
                rec = {"shape": [m, k], "sparsity": 0.7, "batch": batch, "threads": threads, "clock": clock,
                       **kernel_point(w, ws, batch, args.seconds, clock)}  # fmt: skip
                records.append(rec)
                log(f"{m}x{k} b={batch} t={threads} ({clock}): torch fp32 {rec['ms']['torch_fp32']:.3f} ms; "
                    + "  ".join(f"{n} {v:.2f}x" for n, v in rec["vs_torch_fp32"].items() if n != "torch_fp32"))  # fmt: skip
    settings = {"isa": best_isa(), "sparsity": "70% uniform random", "timing": "best of 9 interleaved rounds; "
                "1 thread: CPU time of the calling thread (the machine is shared), 2 threads: wall clock",
                "weights": "randn / sqrt(in), int8 per output channel", "hot": "weights reused call after call"}  # fmt: skip
    return {"kernels": {"settings": settings, "results": records}}


def rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).norm() / ref.norm())


@torch.no_grad()
def divergence_plan(src: nn.Module, masks, ids: torch.Tensor, plan: str) -> dict:
    """Runtime vs fake-quant for one plan: worst layer output (same input), logits; and the fake-quant
    logits under a 1e-7 relative perturbation of the embeddings."""
    fake = copy.deepcopy(src)
    specs = quantize_plan(fake, plan, masks)
    runtime = on_runtime(copy.deepcopy(fake), specs, masks)
    seen: dict[str, tuple] = {}

    def keep(name: str):
        return lambda m, a, o: seen.__setitem__(name, (a[0], o))

    hooks = [fake.get_submodule(n).register_forward_hook(keep(n)) for n in specs]
    ref = fake(input_ids=ids).logits
    for h in hooks:
        h.remove()
    layer = max(rel_diff(runtime.get_submodule(n)(x), o) for n, (x, o) in seen.items())
    rt = runtime(input_ids=ids).logits
    torch.manual_seed(0)
    h = fake.model.embed_tokens.register_forward_hook(lambda m, a, o: o * (1 + 1e-7 * torch.randn_like(o)))
    moved = fake(input_ids=ids).logits
    h.remove()
    return {"worst_layer_output_rel_diff": layer, "logits_rel_diff_runtime": rel_diff(rt, ref),
            "logits_rel_diff_fake_perturbed_1e-7": rel_diff(moved, ref),
            "argmax_agreement_runtime": float((rt.argmax(-1) == ref.argmax(-1)).float().mean())}  # fmt: skip


def divergence(args: argparse.Namespace) -> dict:
    """How closely the runtime's W8A8 model follows the fake-quant one, next to how much the fake-quant
    model itself moves under a 1e-7 relative perturbation of its embeddings (its own numerical noise)."""
    tok = load_tokenizer("smollm2-135m")
    base = load_model("smollm2-135m", "float32")
    src, masks = sparse_model(base, None, 0.5, args.work / "sparsegpt50.pt")
    problems = gsm_problems()
    ids = tok(problems[0].text + problems[1].text, return_tensors="pt").input_ids[:, :256]
    out = {}
    for plan in ("w8a16", "w8a8", "w8a8, down_proj in fp32", "w8a8, down_proj w8a16"):
        out[plan] = divergence_plan(src, masks, ids, plan)
        log(f"{plan}: " + ", ".join(f"{k} {v:.3g}" for k, v in out[plan].items()))
    settings = {"model": "50% SparseGPT", "tokens": int(ids.shape[1]), "text": "GSM problems 0 and 1",
                "layer_check": "each quantized layer of the runtime model fed the fake-quant layer's own input"}  # fmt: skip
    return {"divergence": {"settings": settings, **out}}


def groups(args: argparse.Namespace) -> dict:
    tok = load_tokenizer("smollm2-135m")
    base = load_model("smollm2-135m", "float32")
    batches = calibration_batches(tok, load_texts("gsm", "calibration"), nsamples=args.calib_samples, seqlen=args.seqlen,
                                  batch_size=4)  # fmt: skip
    probe = calibration_batches(tok, load_texts("gsm", "calibration"), nsamples=4, seqlen=256, batch_size=4, seed=1)
    out = {}
    for kind in ("dense", "sparse50"):
        src, masks = (
            (base, None)
            if kind == "dense"
            else sparse_model(base, batches, 0.5, args.work / "sparsegpt50.pt")
        )
        out[kind] = group_loss_sensitivity(src, probe, "w8a8", masks=masks)
        log(
            f"{kind} W8A8 loss increase by layer kind: "
            + ", ".join(f"{k} {v:+.4f}" for k, v in out[kind].items())
        )
    settings = {"probe": "4 x 256 tokens of GSM variants (seed 1)", "scheme": "w8a8 (dynamic per token)",
                "unit": "mean next-token NLL increase, nats"}  # fmt: skip
    return {"group_sensitivity": {"settings": settings, **out}}


def head(args: argparse.Namespace) -> dict:
    """Perplexity of the 50% sparse w8a16 model with the lm_head also int8 (untied from the embeddings),
    and of W8A8 with every v_proj (the kind `groups` ranks first) left in fp32, dense and sparse."""
    from sparseft.quant import fake_quantize_weight

    tok = load_tokenizer("smollm2-135m")
    base = load_model("smollm2-135m", "float32")
    batches = calibration_batches(tok, load_texts("gsm", "calibration"), nsamples=args.calib_samples, seqlen=args.seqlen,
                                  batch_size=4)  # fmt: skip
    model, masks = sparse_model(base, batches, 0.5, args.work / "sparsegpt50.pt")
    quantize_model(model, "w8a16", masks=masks)
    new_head = nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=False)
    with torch.no_grad():
        new_head.weight.copy_(fake_quantize_weight(model.lm_head.weight))
    model.lm_head = new_head  # a new module: the embedding keeps its fp32 weight
    texts = [p.text for p in gsm_problems()][: args.texts]
    ppl = perplexity(model, tok, texts)
    log(f"sparse50 w8a16 + int8 lm_head ppl {ppl:.4f}")
    rows = {"sparse50 w8a16 + int8 lm_head": {"perplexity": ppl, "texts": args.texts}}
    sparse, _ = sparse_model(base, batches, 0.5, args.work / "sparsegpt50.pt")
    for kind, src in (("dense", base), ("sparse50", sparse)):
        model = copy.deepcopy(src)
        quantize_model(
            model, "w8a8", masks=None if kind == "dense" else masks, ignore=[r"self_attn\.v_proj$"]
        )
        ppl = perplexity(model, tok, texts)
        rows[f"{kind} w8a8, v_proj in fp32"] = {"perplexity": ppl, "texts": args.texts}
        log(f"{kind} w8a8, v_proj in fp32 ppl {ppl:.4f}")
    return {"extra_perplexity": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--stage", choices=["accuracy", "speed", "kernels", "divergence", "groups", "head"], required=True
    )
    ap.add_argument("--texts", type=int, default=100, help="held-out GSM problems to evaluate (of 100)")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512, help="calibration window length")
    ap.add_argument(
        "--sens-batches", type=int, default=2, help="calibration batches for the sensitivity report"
    )
    ap.add_argument(
        "--keep-fp", type=int, default=4, help="most sensitive layers left in fp32 in one W8A8 row"
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="speed/kernels: thread counts")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="kernels: measuring time per point")
    ap.add_argument("--no-sensitivity", dest="sensitivity", action="store_false",
                    help="accuracy: skip the sensitivity report and its row")
    ap.add_argument("--runtime", action="store_true", help="accuracy: add rows run on the runtime's kernels")
    ap.add_argument("--key", default="accuracy", help="accuracy: key of the results in the JSON")
    ap.add_argument("--work", type=Path, default=Path("runs/quant_smollm2"), help="cache of the pruned model")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads[0])
    stages = {"accuracy": accuracy, "speed": speed, "kernels": kernels, "divergence": divergence,
              "groups": groups, "head": head}  # fmt: skip
    result = stages[args.stage](args)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    meta = {"model": "SmolLM2-135M-Instruct (packaged GGUF, loaded fp32)", "machine": platform.machine(),
            "torch": torch.__version__, f"{args.key if args.stage == 'accuracy' else args.stage}_date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    merged = {**old, **result, "meta": {**old.get("meta", {}), **meta}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
