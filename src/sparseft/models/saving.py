"""Write a model folder atomically: HF weights (safetensors), tokenizer, masks and a JSON record.

Everything goes to a temporary sibling folder that is renamed into place at the end, so an interrupted
run leaves either the previous folder or nothing, never half a model.

>>> save_model_folder(model, "runs/smollm2-50", tokenizer=tok, masks=masks, record={"sparsity": 0.5})
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from sparseft.atomic import atomic_folder, atomic_write_text
from sparseft.models.mask_io import Masks, save_masks

MASKS_FILE = "masks.safetensors"
# The stage record; distinct from the compressed checkpoint's metadata (`sparseft.json`, runtime/checkpoint.py).
RECORD_FILE = "stage.json"


def save_model_folder(
    model,
    out_dir: str | Path,
    *,
    tokenizer=None,
    masks: Masks | None = None,
    record: dict | None = None,
    extra_tensors: dict[str, dict] | None = None,
    overwrite: bool | None = None,
) -> Path:
    """Save `model` (+ tokenizer/processor, masks, record) to `out_dir`, replacing it atomically.

    `extra_tensors` maps a file name to tensors written beside the model as safetensors
    (e.g. {"quant_scales.safetensors": scales}).
    """
    with atomic_folder(out_dir, overwrite) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if masks is not None:
            save_masks(masks, tmp / MASKS_FILE)
        for file_name, tensors in (extra_tensors or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / file_name))
        if record is not None:
            write_record(tmp, record)
    return Path(out_dir)


def write_record(folder: str | Path, record: dict) -> None:
    """The run's JSON record (`stage.json`) in `folder`, written atomically."""
    atomic_write_text(Path(folder) / RECORD_FILE, json.dumps(record, indent=2, default=str))


__all__ = ["MASKS_FILE", "RECORD_FILE", "atomic_folder", "save_model_folder", "write_record"]
