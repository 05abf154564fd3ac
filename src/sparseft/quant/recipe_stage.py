"""The `quantize` stage of a recipe: fake-quantize the previous stage's model and save it with its scales.

    stages:
      - oneshot: {method: sparsegpt, sparsity: 0.5}
      - quantize: {scheme: w8a8, ignore: ['mlp\\.down_proj$']}   # W8A8, down-projections left in fp32
      - compress: {values: int8}

Masks of the input folder are honoured (pruned weights stay zero) and written again; calibration data
is only read by schemes/methods that need it (static activation scales, gptq).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def quantize_stage(ctx: Any, settings: Any) -> dict:
    """Run one quantize stage: `ctx.input` -> `ctx.output` (atomic); returns the stage's record."""
    from sparseft.data.calibration import calibration_batches, calibration_texts
    from sparseft.models import load_model, load_tokenizer
    from sparseft.models.saving import MASKS_FILE
    from sparseft.prune import load_masks
    from sparseft.quant.checkpoint import save_quantized
    from sparseft.quant.fakequant import quantize_model

    model = load_model(ctx.input, ctx.recipe.dtype)
    tokenizer = load_tokenizer(ctx.input, missing_ok=True) or load_tokenizer(ctx.source, missing_ok=True)
    masks_path = Path(ctx.input) / MASKS_FILE
    masks = load_masks(masks_path) if masks_path.exists() else None
    method = getattr(settings, "method", "rtn")
    batches = None
    if settings.scheme == "w8a8-static" or method == "gptq":
        texts = calibration_texts(settings.calib.source)
        batches = calibration_batches(tokenizer, texts, settings.calib.nsamples, settings.calib.seqlen,
                                      encoder_decoder=bool(getattr(model.config, "is_encoder_decoder", False)))
    fq = quantize_model(model, settings.scheme, settings.targets, settings.ignore, masks, batches, method)
    record = {**settings.model_dump(), "quantized_layers": len(fq.layers)}
    save_quantized(model, ctx.output, fq, tokenizer=tokenizer, masks=masks, record=record)
    return {"stage": "quantize", **record, "quant": fq.record()}
