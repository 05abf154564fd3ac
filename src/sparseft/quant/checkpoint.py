"""Save and load fake-quantized model folders: an HF model folder plus the int8 scales.

The folder holds the dequantized weights (plain safetensors, loadable by any HF code), `masks.safetensors`
when the model is sparse, `quant_scales.safetensors` ('<layer>.weight_scale', '<layer>.input_scale') and
`sparseft.json` with the scheme and each layer's activation mode; a head quantized by GPTQ (`quant.head`)
adds '<head>.head_scale' and a 'quant_head' record. Written atomically.

    >>> save_quantized(model, "runs/smollm2-50-w8a8", fq, tokenizer=tok, masks=masks)
    >>> model, fq = load_quantized("runs/smollm2-50-w8a8")    # activation hooks re-attached
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from sparseft.errors import CheckpointError
from sparseft.models.saving import RECORD_FILE, save_model_folder
from sparseft.quant.fakequant import FakeQuantizer, LayerQuant, QuantScheme
from sparseft.quant.head import HEAD_FORMATS, HeadQuant

SCALES_FILE = "quant_scales.safetensors"


def save_quantized(
    model, out_dir: str | Path, fq: FakeQuantizer, *, tokenizer=None, masks=None, record: dict | None = None,
    overwrite: bool | None = None, head: HeadQuant | None = None,
) -> Path:
    """Write the model folder, its scales and a record ({'stage': 'quantize', 'quant': ...} + `record`);
    `head`: the output projection's GPTQ result (`quantize_head`), its scales kept beside the others."""
    full_record = {"stage": "quantize", **(record or {}), "quant": fq.record()}
    scales = fq.scales_state_dict()
    if head is not None:
        full_record["quant_head"] = head.record()
        scales[f"{head.name}.head_scale"] = head.scales
    return save_model_folder(model, out_dir, tokenizer=tokenizer, masks=masks, record=full_record,
                             extra_tensors={SCALES_FILE: scales}, overwrite=overwrite)


def read_head_quant(folder: str | Path) -> HeadQuant | None:
    """The quantized head recorded in a folder written by `save_quantized`, or None (no head quantized,
    or not a quantized folder)."""
    folder = Path(folder)
    try:
        info = json.loads((folder / RECORD_FILE).read_text()).get("quant_head")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not info:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("name"), str) or info.get("format") not in HEAD_FORMATS:
        raise CheckpointError(f"{folder / RECORD_FILE}: 'quant_head' needs a head name and a format of "
                              f"{', '.join(HEAD_FORMATS)}, got {info!r:.200}")
    key = f"{info['name']}.head_scale"
    try:
        scales = load_file(str(folder / SCALES_FILE))
    except FileNotFoundError as err:
        raise CheckpointError(f"{folder} records a quantized head but {SCALES_FILE} is missing") from err
    if key not in scales:
        raise CheckpointError(f"{folder / SCALES_FILE} lacks the head scales {key}")
    error = info.get("output_error", 0.0)
    return HeadQuant(info["name"], info["format"], scales[key], float(error) if isinstance(error, (int, float)) else 0.0)


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
