"""Write a model folder atomically: HF weights (safetensors), tokenizer, masks and a JSON record.

Everything goes to a temporary sibling folder that is renamed into place at the end, so an interrupted
run leaves either the previous folder or nothing, never half a model.

>>> save_model_folder(model, "runs/smollm2-50", tokenizer=tok, masks=masks, record={"sparsity": 0.5})
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from sparseft.prune.masks import Masks, save_masks

MASKS_FILE = "masks.safetensors"
RECORD_FILE = "sparseft.json"


def save_model_folder(
    model,
    out_dir: str | Path,
    *,
    tokenizer=None,
    masks: Masks | None = None,
    record: dict | None = None,
    extra_tensors: dict[str, dict] | None = None,
    overwrite: bool = True,
) -> Path:
    """Save `model` (+ tokenizer/processor, masks, record) to `out_dir`, replacing it atomically.

    `extra_tensors` maps a file name to tensors written beside the model as safetensors
    (e.g. {"quant_scales.safetensors": scales}).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True or choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if masks is not None:
            save_masks(masks, tmp / MASKS_FILE)
        for file_name, tensors in (extra_tensors or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / file_name))
        if record is not None:
            (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
