"""Load an HF model and its tokenizer/processor from a packaged name, a folder, a GGUF file or a hub id.

>>> model = load_model("smollm2-135m", dtype="bfloat16")
>>> model = load_model("runs/pruned")                         # a save_pretrained folder
>>> model = load_model("path/to/model.Q4_1.gguf")             # dequantized GGUF
>>> model = load_model("HuggingFaceTB/SmolLM2-135M")          # hub id, where a network exists
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from sparseft.errors import ConfigError, ModelError
from sparseft.models.gguf import check_gguf_file, load_gguf_model
from sparseft.models.registry import PACKAGED_MODELS, packaged_model_dir

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32'/'fp32'/'bfloat16'/'bf16' or a torch dtype -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype '{dtype}'; accepted: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_source(name_or_path: str | Path) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for any accepted model reference."""
    text = str(name_or_path)
    if text in PACKAGED_MODELS:
        return str(packaged_model_dir(text)), None
    path = Path(text)
    if text.endswith(".gguf"):
        check_gguf_file(path)
        return str(path.parent), path.name
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path} is a folder without config.json; expected a save_pretrained folder")
        return text, None
    if path.exists() or text.startswith((".", "/")) or text.count("/") > 1:
        raise ModelError(
            f"cannot load '{text}': expected a packaged name ({', '.join(PACKAGED_MODELS)}), "
            "a model folder with config.json, a .gguf file, or a hub id like 'owner/name'"
        )
    return text, None


def is_compressed_checkpoint(folder: str | Path) -> bool:
    """True for a folder that holds a compressed checkpoint's metadata (`sparseft.json`).

    Any such folder loads through the validating loader, even when the file is damaged: it then fails
    with a CheckpointError instead of loading as a plain HF model with random sparse layers."""
    return (Path(folder) / "sparseft.json").is_file()


def max_positions(config: PretrainedConfig) -> int | None:
    """How many token positions the model embeds (None: no limit, e.g. T5's relative positions)."""
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "max_target_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_seqlen(config: PretrainedConfig, seqlen: int, what: str) -> None:
    """A ConfigError when `seqlen` tokens would run past the positions the model embeds."""
    limit = max_positions(config)
    if limit is not None and seqlen > limit:
        raise ConfigError(f"{what} of {seqlen} tokens is longer than the model's {limit} positions; use at most {limit}")


def model_class_for(config: PretrainedConfig) -> type:
    """The Auto class that builds the task head for this config (speech, seq2seq or causal LM)."""
    if config.model_type == "whisper":
        return AutoModelForSpeechSeq2Seq
    if getattr(config, "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM
    return AutoModelForCausalLM


def model_kind(config: PretrainedConfig) -> str:
    """'causal' (decoder-only LM), 'seq2seq' (text encoder-decoder, e.g. T5) or 'speech' (e.g. Whisper):
    what data the model reads and how it is evaluated (perplexity, BLEU, WER)."""
    cls = model_class_for(config)
    return {AutoModelForSpeechSeq2Seq: "speech", AutoModelForSeq2SeqLM: "seq2seq"}.get(cls, "causal")


def _hub_kwargs(trust_remote_code: bool, revision: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    return kwargs


def load_model(
    name_or_path: str | Path,
    dtype: str | torch.dtype = "float32",
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> PreTrainedModel:
    """Load a model in eval mode with weights in `dtype` (float32 or bfloat16)."""
    torch_dtype = parse_dtype(dtype)
    source, gguf_file = resolve_source(name_or_path)
    if is_compressed_checkpoint(source):
        from sparseft.runtime.checkpoint import load_compressed

        return load_compressed(source, torch_dtype)
    if gguf_file:
        return load_gguf_model(Path(source) / gguf_file, torch_dtype).eval()
    kwargs = _hub_kwargs(trust_remote_code, revision)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        model = model_class_for(config).from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as err:
        raise ModelError(f"could not load model '{name_or_path}': {err}") from err
    return model.eval()


def load_tokenizer(
    name_or_path: str | Path,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
    missing_ok: bool = False,
):
    """The tokenizer (or, for speech models, the processor) that goes with `load_model(name_or_path)`.

    With `missing_ok`, a model folder that has no tokenizer gives None instead of an error.
    """
    source, gguf_file = resolve_source(name_or_path)
    if gguf_file:
        return AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    kwargs = _hub_kwargs(trust_remote_code, revision)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        if config.model_type == "whisper":
            try:
                return AutoProcessor.from_pretrained(source, **kwargs)
            except (OSError, ValueError):
                pass  # a folder with a tokenizer but no feature extractor: the speech data path builds one
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if missing_ok:
            return None
        raise ModelError(f"could not load tokenizer for '{name_or_path}': {err}") from err
