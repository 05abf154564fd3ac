"""GGUF files: load through transformers' `gguf_file=` and convert to a plain safetensors HF folder.

A model loaded from GGUF cannot `save_pretrained` (it keeps a GGUF quantization config), so the
conversion copies its (dequantized) state dict into a fresh model of the same architecture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from sparseft.errors import ModelError

GGUF_MAGIC = b"GGUF"


def check_gguf_file(path: Path) -> None:
    """Fail with a clear message when `path` is missing or is not a GGUF file."""
    if not path.is_file():
        raise ModelError(f"GGUF file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")


def load_gguf_model(path: Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load a causal LM from a GGUF file (dequantized to `dtype`)."""
    check_gguf_file(path)
    try:
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except Exception as err:  # transformers raises many kinds on a damaged file
        raise ModelError(f"could not read GGUF file {path}: {type(err).__name__}: {err}") from err


def convert_gguf_to_hf(path: Path, out_dir: Path) -> None:
    """Write an HF folder (config, safetensors weights, tokenizer) equivalent to GGUF file `path`."""
    path = Path(path)
    gguf_model = load_gguf_model(path)
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise ModelError(f"GGUF {path} does not map onto {type(model).__name__}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(out_dir)
