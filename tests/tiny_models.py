"""Tiny random HF models of every architecture family, built from configs (no download).

Import as `from tiny_models import build_tiny_model` (tests/ is on sys.path through the root conftest).
"""

from __future__ import annotations

import torch


def _tiny_configs() -> dict[str, tuple[type, dict]]:
    """family -> (config class, keyword arguments): kept as arguments so overrides rebuild derived fields."""
    from transformers import (
        GPT2Config,
        LlamaConfig,
        MptConfig,
        OPTConfig,
        Qwen2Config,
        T5Config,
        WhisperConfig,
    )

    decoder = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 128}
    return {
        "gpt2": (GPT2Config, {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "n_positions": 128}),
        "llama": (LlamaConfig, decoder),
        "mpt": (MptConfig, {"d_model": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 128, "max_seq_len": 128,
                            "expansion_ratio": 2}),
        "opt": (OPTConfig, {"hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                            "vocab_size": 128, "max_position_embeddings": 128, "word_embed_proj_dim": 64}),
        "qwen2": (Qwen2Config, decoder),
        "t5": (T5Config, {"d_model": 64, "d_ff": 128, "d_kv": 16, "num_layers": 2, "num_decoder_layers": 2,
                          "num_heads": 4, "vocab_size": 128}),
        "whisper": (WhisperConfig, {
            "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
            "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "vocab_size": 128,
            "num_mel_bins": 16, "max_source_positions": 32, "max_target_positions": 32, "pad_token_id": 0,
            "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1,
        }),
    }  # fmt: skip


TINY_FAMILIES = ["gpt2", "llama", "mpt", "opt", "qwen2", "t5", "whisper"]


def tiny_config(family: str, **overrides):
    """The tiny config of `family`, with `overrides` (e.g. vocab_size=260 for the byte tokenizer)."""
    cls, kwargs = _tiny_configs()[family]
    return cls(**{**kwargs, **overrides})


def build_tiny_model(family: str, seed: int = 0, **overrides):
    """A tiny random model of `family` with its task head, in eval mode (`overrides` go to its config).

    >>> build_tiny_model("llama", vocab_size=260, hidden_size=32, intermediate_size=64)
    """
    from sparseft.models.loading import model_class_for

    torch.manual_seed(seed)
    config = tiny_config(family, **overrides)
    return model_class_for(config).from_config(config).eval()


def tiny_batches(model, n_batches: int = 2, batch: int = 2, seq: int = 12, seed: int = 1) -> list[dict]:
    """Random model inputs for any tiny model: token ids, plus decoder ids (seq2seq) or log-mel features
    (Whisper), shaped from the model's own config."""
    g = torch.Generator().manual_seed(seed)
    config = model.config
    batches = []
    for _ in range(n_batches):
        ids = torch.randint(3, config.vocab_size, (batch, seq), generator=g)
        if config.model_type == "whisper":
            frames = 2 * config.max_source_positions
            feats = torch.randn(batch, config.num_mel_bins, frames, generator=g)
            batches.append({"input_features": feats, "decoder_input_ids": ids})
        elif getattr(config, "is_encoder_decoder", False):
            batches.append({"input_ids": ids, "decoder_input_ids": ids})
        else:
            batches.append({"input_ids": ids})
    return batches


def byte_tokenizer(bos: bool = False):
    """A byte-level tokenizer (256 byte tokens + <eos>, + <bos> added to every encoding when `bos`),
    built in memory: real `tokenizers` machinery, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"] = len(vocab)
    vocab["<bos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", bos_token="<bos>")
