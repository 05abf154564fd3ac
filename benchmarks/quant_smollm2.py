"""INT8 that keeps sparsity on SmolLM2-135M: held-out perplexity and end-to-end decode speed.

    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage accuracy   # ~40 min on 1 busy core
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage speed      # a few minutes
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage groups     # a few minutes
    OMP_WAIT_POLICY=passive python benchmarks/quant_smollm2.py --stage head --texts 50   # int8 lm_head ppl

accuracy: perplexity on the 100 original GSM problems (held out: calibration uses generated variants) of
dense fp32, dense int8 (w8a16 weight-only; w8a8 with dynamic per-token activations), 50% sparse fp32
(SparseGPT, calibrated on GSM variants) and the same sparse model in int8; plus the per-layer
sensitivity report, and W8A8 with the most sensitive layers (by the report) left in fp32.
speed: greedy decode tokens/s at batch 1 of dense fp32, torch dense int8 (`quantize_dynamic`, every
Linear incl. lm_head), and 50% / 70% sparse int8 on the runtime's int8 SparseLinear (weight-only int8
values, fp32 activations quantized inside the kernel to 16 bits), with the tied lm_head in fp32 and
also in int8; all in the same process, same thread count.
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

from sparseft.data import gsm_problems
from sparseft.data.calibration import calibration_batches, calibration_texts
from sparseft.evaluate.perplexity import perplexity
from sparseft.models import load_model, load_tokenizer
from sparseft.prune.driver import oneshot
from sparseft.quant import group_loss_sensitivity, layer_sensitivity, quantize_model

RESULTS = Path(__file__).parent / "results" / "quant_smollm2.json"
PROMPT = (
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


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
    batches = calibration_batches(tok, calibration_texts("gsm"), nsamples=args.calib_samples, seqlen=args.seqlen,
                                  batch_size=4)  # fmt: skip
    sens_batches = batches[: args.sens_batches]
    rows: dict[str, dict] = {}

    def measure(label: str, model: nn.Module, **extra) -> float:
        t0 = time.perf_counter()
        ppl = perplexity(model, tok, texts)
        rows[label] = {"perplexity": ppl, **extra}
        log(f"{label:40s} ppl {ppl:.4f}  ({time.perf_counter() - t0:.0f} s)")
        return ppl

    def quantized(label: str, src: nn.Module, scheme: str, ref: float, masks=None, ignore=None) -> None:
        model = copy.deepcopy(src)
        fq = quantize_model(model, scheme, masks=masks, ignore=ignore)
        ppl = measure(label, model, scheme=scheme, ignore=ignore or [], quantized_layers=len(fq.layers))
        rows[label]["vs_fp32"] = ppl / ref - 1

    sensitivity = {}
    for kind in ("dense", "sparse50"):
        if kind == "dense":
            src, masks = base, None
        else:
            src, masks = sparse_model(base, batches, 0.5, args.work / "sparsegpt50.pt")
        ref = measure(f"{kind} fp32", src)
        report = layer_sensitivity(src, sens_batches, masks=masks)
        sensitivity[kind] = report.as_dict()["layers"]
        log(f"{kind} sensitivity (worst first):\n" + report.format(max_rows=8))
        quantized(f"{kind} w8a16", src, "w8a16", ref, masks)
        quantized(f"{kind} w8a8", src, "w8a8", ref, masks)
        ignore = [r.name for r in report.layers[: args.keep_fp]]
        ignore = [f"^{n.replace('.', '[.]')}$" for n in ignore]
        quantized(f"{kind} w8a8, {args.keep_fp} most sensitive in fp32", src, "w8a8", ref, masks, ignore)
        quantized(f"{kind} w8a8, down_proj in fp32", src, "w8a8", ref, masks, [r"mlp\.down_proj$"])
    settings = {"heldout": f"first {args.texts} of the 100 original GSM problems (question + worked answer)",
                "eval_seqlen": 512, "calibration": f"{args.calib_samples} x {args.seqlen} tokens of GSM variants",
                "pruning": "SparseGPT 50% uniform, every Linear in the blocks (lm_head/embeddings dense)",
                "quantized_layers": "every Linear in the blocks; lm_head (tied to embeddings) stays fp32",
                "weights": "int8 symmetric per output channel", "w8a8_activations": "int8 dynamic per token",
                "sensitivity_batches": f"{args.sens_batches} x 4 x {args.seqlen} tokens",
                "threads": torch.get_num_threads()}  # fmt: skip
    return {"accuracy": {"settings": settings, "perplexity": rows, "sensitivity": sensitivity}}


def generate(model: nn.Module, ids: torch.Tensor, tokens: int) -> tuple[float, list[int]]:
    """(seconds, new token ids) of one greedy generate() call of exactly `tokens` new tokens."""
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return time.perf_counter() - t0, out[0, ids.shape[1] :].tolist()


def decode_all(models: dict[str, nn.Module], ids: torch.Tensor, tokens: int, repeats: int):
    """Best seconds and tokens per model; rounds go over every model in turn, so a burst of load from
    other processes hits all models alike instead of one."""
    for model in models.values():
        generate(model, ids, 4)  # warm-up
    best = dict.fromkeys(models, float("inf"))
    toks: dict[str, list[int]] = {}
    for _ in range(repeats):
        for name, model in models.items():
            seconds, toks[name] = generate(model, ids, tokens)
            best[name] = min(best[name], seconds)
    return best, toks


def speed_models(
    base: nn.Module, batches, args: argparse.Namespace
) -> dict[str, tuple[nn.Module, str | None]]:
    """name -> (model, name of the model whose greedy tokens it should reproduce, if any)."""
    from sparseft.prune import magnitude_prune
    from sparseft.runtime import SparseLinear, sparsify_model

    torch.backends.quantized.engine = "x86"
    models: dict[str, tuple[nn.Module, str | None]] = {"dense fp32": (base, None)}
    models["dense int8 (torch quantize_dynamic)"] = (
        torch.ao.quantization.quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8),
        None,
    )
    for sp in (0.5, 0.7):
        if sp == 0.5:
            pruned, masks = sparse_model(base, batches, 0.5, args.work / "sparsegpt50.pt")
        else:  # speed does not depend on which weights are kept; magnitude saves a SparseGPT run
            pruned = copy.deepcopy(base)
            masks = magnitude_prune(pruned, sp)
        fq_name = f"{sp:.0%} sparse w8a16 fake-quant (torch dense)"
        quantize_model(pruned, "w8a16", masks=masks)
        models[fq_name] = (pruned, None)
        rt = copy.deepcopy(pruned)
        sparsify_model(rt, "int8", masks=masks)
        models[f"{sp:.0%} sparse int8 runtime"] = (rt, fq_name)
        head = copy.deepcopy(rt)
        head.lm_head = SparseLinear.from_dense(head.lm_head, "int8")  # unties: the embedding stays fp32
        models[f"{sp:.0%} sparse int8 runtime + int8 lm_head"] = (head, f"{sp:.0%} sparse int8 runtime")
    return models


def speed(args: argparse.Namespace) -> dict:
    from sparseft.runtime import best_isa, set_num_threads

    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    tok = load_tokenizer("smollm2-135m")
    base = load_model("smollm2-135m", "float32")
    batches = calibration_batches(tok, calibration_texts("gsm"), nsamples=args.calib_samples, seqlen=args.seqlen,
                                  batch_size=4)  # fmt: skip
    ids = tok(PROMPT, return_tensors="pt").input_ids
    models = speed_models(base, batches, args)
    with torch.no_grad():
        best, tokens = decode_all(
            {name: m for name, (m, _) in models.items()}, ids, args.tokens, args.repeats
        )
    rows = {}
    ref = args.tokens / best["dense fp32"]
    for name, (_, twin) in models.items():
        tps = args.tokens / best[name]
        rows[name] = {"tokens_per_s": tps, "vs_dense_fp32": tps / ref}
        if twin is not None:
            same = sum(a == b for a, b in zip(tokens[name], tokens[twin], strict=True)) / args.tokens
            rows[name]["same_greedy_tokens_as"] = {"model": twin, "fraction": same}
        log(f"{name:45s} {tps:7.1f} tok/s  {tps / ref:5.2f}x")
    int8_ref = rows["dense int8 (torch quantize_dynamic)"]["tokens_per_s"]
    for row in rows.values():
        row["vs_torch_dense_int8"] = row["tokens_per_s"] / int8_ref
    settings = {"new_tokens": args.tokens, "batch": 1, "greedy": True, "threads": args.threads,
                "timing": f"best of {args.repeats} generate() calls per model, round-robin over models, one process",
                "prompt_tokens": int(ids.shape[1]), "isa": best_isa(), "OMP_WAIT_POLICY": "passive",
                "50%": "SparseGPT masks (same model as the accuracy table)", "70%": "per-layer magnitude masks",
                "torch_int8": "quantize_dynamic(model, {nn.Linear}, qint8): every Linear incl. lm_head"}  # fmt: skip
    return {"speed": {"settings": settings, "decode": rows}}


def groups(args: argparse.Namespace) -> dict:
    tok = load_tokenizer("smollm2-135m")
    base = load_model("smollm2-135m", "float32")
    batches = calibration_batches(tok, calibration_texts("gsm"), nsamples=args.calib_samples, seqlen=args.seqlen,
                                  batch_size=4)  # fmt: skip
    probe = calibration_batches(tok, calibration_texts("gsm"), nsamples=4, seqlen=256, batch_size=4, seed=1)
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
    batches = calibration_batches(tok, calibration_texts("gsm"), nsamples=args.calib_samples, seqlen=args.seqlen,
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
    ap.add_argument("--stage", choices=["accuracy", "speed", "groups", "head"], required=True)
    ap.add_argument("--texts", type=int, default=100, help="held-out GSM problems to evaluate (of 100)")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512, help="calibration window length")
    ap.add_argument(
        "--sens-batches", type=int, default=2, help="calibration batches for the sensitivity report"
    )
    ap.add_argument(
        "--keep-fp", type=int, default=4, help="most sensitive layers left in fp32 in one W8A8 row"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/quant_smollm2"), help="cache of the pruned model")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"accuracy": accuracy, "speed": speed, "groups": groups, "head": head}[args.stage](args)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    meta = {"model": "SmolLM2-135M-Instruct (packaged GGUF, loaded fp32)", "machine": platform.machine(),
            "torch": torch.__version__, f"{args.stage}_date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    merged = {**old, **result, "meta": {**old.get("meta", {}), **meta}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
