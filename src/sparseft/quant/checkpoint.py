"""Save and load fake-quantized model folders: an HF model folder plus the int8 scales.

The folder holds the dequantized weights (plain safetensors, loadable by any HF code), `masks.safetensors`
when the model is sparse, `quant_scales.safetensors` ('<layer>.weight_scale', '<layer>.input_scale') and
`sparseft.json` with the scheme and each layer's activation mode. Written atomically.

    >>> save_quantized(model, "runs/smollm2-50-w8a8", fq, tokenizer=tok, masks=masks)
    >>> model, fq = load_quantized("runs/smollm2-50-w8a8")    # activation hooks re-attached
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from sparseft.errors import CheckpointError
from sparseft.models.saving import RECORD_FILE, save_model_folder
from sparseft.quant.fakequant import FakeQuantizer, LayerQuant, QuantScheme

SCALES_FILE = "quant_scales.safetensors"


def save_quantized(
    model, out_dir: str | Path, fq: FakeQuantizer, *, tokenizer=None, masks=None, record: dict | None = None
) -> Path:
    """Write the model folder, its scales and a record ({'stage': 'quantize', 'quant': ...} + `record`)."""
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.staging")
    full_record = {"stage": "quantize", **(record or {}), "quant": fq.record()}
    save_model_folder(model, staging, tokenizer=tokenizer, masks=masks, record=full_record)
    try:
        save_file(fq.scales_state_dict(), str(staging / SCALES_FILE))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def read_quantizer(folder: str | Path) -> FakeQuantizer:
    """The FakeQuantizer (scales, modes) saved in `folder`, not yet attached to a model."""
    folder = Path(folder)
    try:
        record: dict[str, Any] = json.loads((folder / RECORD_FILE).read_text())["quant"]
        scales = load_file(str(folder / SCALES_FILE))
    except FileNotFoundError as err:
        raise CheckpointError(f"{folder} is not a quantized model folder: {err.filename} is missing") from err
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{folder / RECORD_FILE} has no valid 'quant' record: {err}") from err
    fq = FakeQuantizer(QuantScheme(record["weights"], record["activations"]))
    for name, mode in record["layers"].items():
        if f"{name}.weight_scale" not in scales:
            raise CheckpointError(f"{folder / SCALES_FILE} lacks the scales of {name}")
        w_scale = scales[f"{name}.weight_scale"]
        w_scale = w_scale.reshape(-1, 1) if record["weights"] == "per_channel" else w_scale.reshape(())
        in_scale = scales.get(f"{name}.input_scale")
        fq.layers[name] = LayerQuant(w_scale, mode, None if in_scale is None else in_scale.reshape(()))
    return fq


def load_quantized(folder: str | Path, dtype: str = "float32"):
    """(model, FakeQuantizer) from a folder written by `save_quantized`, hooks attached."""
    from sparseft.models import load_model

    fq = read_quantizer(folder)
    model = load_model(str(folder), dtype)
    return model, fq.attach(model)
