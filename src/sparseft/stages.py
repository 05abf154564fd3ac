"""Stage runners of the recipe pipeline: each loads its input folder, does one job, writes its folder.

Every runner has the signature `run_KIND(ctx: StageContext, settings) -> record dict` and writes
`ctx.output` atomically (model folders via `save_model_folder`, records via a temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from sparseft.models import load_model, load_tokenizer
from sparseft.models.saving import MASKS_FILE, RECORD_FILE, save_model_folder


def _load(ctx):
    model = load_model(ctx.input, ctx.recipe.dtype)
    tokenizer = load_tokenizer(ctx.input, missing_ok=True) or load_tokenizer(ctx.source, missing_ok=True)
    return model, tokenizer


def _input_masks(ctx):
    from sparseft.prune import load_masks

    path = Path(ctx.input) / MASKS_FILE
    return load_masks(path) if path.exists() else None


def _write_record(folder: Path, record: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(tmp, folder / RECORD_FILE)
    return record


def run_prune(ctx, settings) -> dict:
    from sparseft.prune import magnitude_prune, sparsity_report

    model, tokenizer = _load(ctx)
    masks = magnitude_prune(model, settings.sparsity, scheme=settings.scheme, nm=settings.nm,
                            overrides=settings.overrides, targets=settings.targets, ignore=settings.ignore)
    record = {"stage": "prune", **settings.model_dump(), **sparsity_report(model, masks).as_dict()}
    save_model_folder(model, ctx.output, tokenizer=tokenizer, masks=masks, record=record)
    return record


def run_oneshot(ctx, settings) -> dict:
    from sparseft.data.calibration import calibration_batches, calibration_texts
    from sparseft.prune import sparsity_report
    from sparseft.prune.driver import oneshot

    model, tokenizer = _load(ctx)
    batches = None
    if settings.method != "magnitude":
        texts = calibration_texts(settings.calib.source)
        batches = calibration_batches(tokenizer, texts, settings.calib.nsamples, settings.calib.seqlen,
                                      encoder_decoder=model.config.is_encoder_decoder)
    report = oneshot(model, batches, method=settings.method, sparsity=settings.sparsity, nm=settings.nm,
                     targets=settings.targets, ignore=settings.ignore, blocksize=settings.blocksize,
                     percdamp=settings.percdamp)
    masks = report.masks
    record = {"stage": "oneshot", **settings.model_dump(), "seconds": report.seconds,
              **sparsity_report(model, masks).as_dict()}
    save_model_folder(model, ctx.output, tokenizer=tokenizer, masks=masks, record=record)
    return record


def run_finetune(ctx, settings) -> dict:
    from sparseft.train.recipe_stage import finetune_stage

    return finetune_stage(ctx, settings)


def run_quantize(ctx, settings) -> dict:
    from sparseft.quant.recipe_stage import quantize_stage

    return quantize_stage(ctx, settings)


def run_compress(ctx, settings) -> dict:
    """Swap the pruned Linears for SparseLinear (bitmask + packed values) and save a compressed checkpoint."""
    from sparseft.quant.to_runtime import folder_int8_specs
    from sparseft.runtime import save_compressed, sparsify_model

    model, _ = _load(ctx)
    masks = _input_masks(ctx)
    # A quantized input keeps its exact int8 values, scales and activation modes; the layers its quantize
    # stage left in full precision are not int8-quantized here either (fp32 unless values is bf16).
    int8 = folder_int8_specs(ctx.input)
    fmt = "fp32" if int8 and settings.values == "int8" else settings.values
    names = sparsify_model(model, fmt, masks=masks, int8=int8)
    save_compressed(model, ctx.output)
    size = sum(f.stat().st_size for f in ctx.output.iterdir())
    dense = sum(f.stat().st_size for f in Path(ctx.input).glob("*.safetensors") if f.name != MASKS_FILE)
    return {"stage": "compress", "values": settings.values, "layers": len(names), "bytes": size,
            "int8_layers": len(int8), "w8a8_layers": sum(spec.act != "none" for spec in int8.values()),
            "input_bytes": dense, "ratio": dense / size if size else None}


def run_eval(ctx, settings) -> dict:
    from sparseft.commands.eval import heldout_texts
    from sparseft.evaluate.perplexity import perplexity
    from sparseft.evaluate.sparsity import weight_sparsity

    model, tokenizer = _load(ctx)
    texts = heldout_texts(settings.data)[: settings.max_texts]
    ppl = perplexity(model, tokenizer, texts, seqlen=settings.seqlen)
    sparsity = weight_sparsity(model)
    return _write_record(ctx.output, {"stage": "eval", "model": ctx.input, "data": settings.data,
                                      "texts": len(texts), "perplexity": ppl, "sparsity": sparsity})
