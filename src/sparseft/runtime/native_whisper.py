"""Greedy Whisper transcription with one C call per decoder token (csrc/native_step.c, Whisper switches).

    >>> model = load_model("runs/whisper-50-int8")                 # compressed (SparseLinear) or dense
    >>> decoder = NativeWhisperDecoder(model)                      # refuses a model it cannot run exactly
    >>> ids = decoder.generate(input_features, max_new_tokens=200) # the tokens of greedy model.generate()

At batch 1 a Whisper tiny decoder token costs ~5 ms in HF's generate (compiled step included: the loop,
the logits processors, the cache bookkeeping and dynamo's guards), around ~1.5 ms of kernels. Here the
encoder runs as before (HF's forward: its large matmuls, dense-batch copies where they are faster), the
cross-attention keys and values are computed once per clip by the model's own projections into a cache,
and every decoder token is then one ``native_forward`` that releases the GIL: the same blocks as HF's
``WhisperDecoderLayer`` (LayerNorm, self-attention over the KV cache, cross-attention, fc1 -> GELU -> fc2)
in fp32 C, the projections on the sparse kernels (or a fp32 GEMV for dense layers).

Decoding follows HF's greedy ``WhisperForConditionalGeneration.generate`` for short-form audio (one 30 s
window) without timestamps: the start tokens (``<|startoftranscript|>``, a multilingual model's language
and task tokens, ``<|notimestamps|>``), the generation config's ``suppress_tokens`` at every step and
``begin_suppress_tokens`` at the first, stopping after ``eos_token_id`` or ``max_new_tokens``. The output
is HF's too: the text tokens, without the start tokens and the end-of-text token. `unsupported_reason` says why a model is not run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.runtime import _kernels
from sparseft.runtime.isa import isa_code, num_threads
from sparseft.runtime.native_decode import MAX_PARTS, Description, projection_parts

WHISPER = frozenset({"WhisperForConditionalGeneration"})


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot run on the native Whisper decoder (None when it can)."""
    name = type(model).__name__
    if name not in WHISPER:
        return f"{name} is not a Whisper model (the native decoder runs {', '.join(sorted(WHISPER))})"
    cfg, decoder = model.config, model.model.decoder
    if cfg.activation_function != "gelu":
        return f"activation {cfg.activation_function!r} (the native decoder runs the exact GELU)"
    norms = [decoder.layer_norm] + [n for b in decoder.layers for n in _block_norms(b)]
    if len({float(n.eps) for n in norms}) != 1 or any(n.weight is None or n.bias is None for n in norms):
        return "its LayerNorms differ in epsilon or lack a weight or bias"
    tensors = [decoder.embed_tokens.weight, decoder.embed_positions.weight] + [n.weight for n in norms]
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        return "the native decoder needs fp32 weights on the CPU"
    return None


def _block_norms(block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    return block.self_attn_layer_norm, block.encoder_attn_layer_norm, block.final_layer_norm


def start_tokens(model: nn.Module, language: str | None = None) -> list[int]:
    """The decoder's first tokens for a transcription without timestamps, as HF's Whisper generate builds
    them: start of transcript, then (multilingual models) the language and task tokens, then
    no-timestamps. ``language``: a code such as "en" or "hi" (multilingual models need one here)."""
    gen = model.generation_config
    tokens = [gen.decoder_start_token_id]
    if getattr(gen, "is_multilingual", False):
        if language is None:
            raise ConfigError("a multilingual Whisper model needs a language (e.g. 'en', 'hi') for the native decoder")
        lang = gen.lang_to_id.get(f"<|{language}|>")
        if lang is None:
            raise ConfigError(f"unknown language {language!r} for this model")
        tokens += [lang, gen.task_to_id["transcribe"]]
    no_timestamps = getattr(gen, "no_timestamps_token_id", None)
    return tokens + ([] if no_timestamps is None else [no_timestamps])


def _mask(tokens: Sequence[int] | None, vocab: int) -> torch.Tensor:
    mask = torch.zeros(vocab, dtype=torch.bool)
    ids = [t for t in tokens or () if 0 <= t < vocab]
    mask[ids] = True
    return mask


class NativeWhisperDecoder:
    """A Whisper model (dense or compressed) decoding one C step per token; see the module doc.

    ``max_positions``: decoder positions the KV cache holds (start tokens + new ones; at most the model's
    ``max_target_positions``). The model is not changed; the decoder shares its weights."""

    def __init__(self, model: nn.Module, max_positions: int | None = None) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ConfigError(f"native Whisper decoder: {reason}")
        cfg = model.config
        limit = cfg.max_target_positions
        max_positions = limit if max_positions is None else max_positions
        if not 1 <= max_positions <= limit:
            raise ConfigError(f"max_positions must be in 1..{limit} (the model's decoder positions), got {max_positions}")
        self.model, self.max_positions = model, max_positions
        self.heads = cfg.decoder_attention_heads
        self.head_dim = cfg.d_model // self.heads
        self.frames = cfg.max_source_positions
        layers = cfg.decoder_layers
        self.kcache = torch.zeros(layers, self.heads, max_positions, self.head_dim)
        self.vcache = torch.zeros_like(self.kcache)
        self.xk = torch.zeros(layers, self.heads, self.frames, self.head_dim)
        self.xv = torch.zeros_like(self.xk)
        self.vocab = model.proj_out.out_features
        self.logits = torch.empty(self.vocab)
        gen = model.generation_config
        self.always = _mask(gen.suppress_tokens, self.vocab)
        self.first = self.always | _mask(gen.begin_suppress_tokens, self.vocab)
        self.eos = gen.eos_token_id
        self._describe()

    def _describe(self) -> None:
        model, d = self.model, Description()
        cfg, dec = model.config, model.model.decoder
        d.ints += [cfg.decoder_layers, cfg.d_model, self.heads, self.heads, self.head_dim, cfg.decoder_ffn_dim,
                   self.vocab, self.max_positions, 0, 1, 1, self.frames,
                   d.address(dec.embed_tokens.weight), d.address(dec.layer_norm.weight), d.address(dec.layer_norm.bias),
                   0, d.address(dec.embed_positions.weight[: self.max_positions]), d.address(self.kcache),
                   d.address(self.vcache), d.address(self.xk), d.address(self.xv)]  # fmt: skip
        d.floats += [float(dec.layer_norm.eps), float(dec.layers[0].self_attn.scaling), 1.0, float(dec.embed_scale)]
        d.floats.append(d.proj(model.proj_out))
        for block in dec.layers:
            self._describe_block(d, block)
        self._native, self._keep = d.build(), d.keep

    @staticmethod
    def _describe_block(d: Description, block: nn.Module) -> None:
        qkv = projection_parts(block.self_attn, ("q_proj", "k_proj", "v_proj"))
        ln1, lnx, ln2 = _block_norms(block)
        d.ints += [d.address(t) for t in (ln1.weight, ln2.weight, ln1.bias, ln2.bias, lnx.weight, lnx.bias)]
        d.ints += [len(qkv), 1]
        pad = [None] * MAX_PARTS
        layers = (qkv + pad)[:MAX_PARTS] + [block.fc1] + pad[1:] + [block.self_attn.out_proj, block.fc2,
                                                                     block.encoder_attn.q_proj, block.encoder_attn.out_proj]
        d.floats += [d.proj(layer) for layer in layers]

    @torch.no_grad()
    def encode(self, input_features: torch.Tensor) -> None:
        """Run the encoder on (1, mels, frames) features and fill the cross-attention cache from its output
        with each block's own key / value projections."""
        states = self.model.model.encoder(input_features.to(torch.float32)).last_hidden_state
        if states.shape[:2] != (1, self.frames):
            raise ConfigError(f"the encoder gave {tuple(states.shape)}; the native decoder runs 1 clip of {self.frames} frames")
        for i, block in enumerate(self.model.model.decoder.layers):
            attn = block.encoder_attn
            for proj, cache in ((attn.k_proj, self.xk), (attn.v_proj, self.xv)):
                cache[i] = proj(states)[0].view(self.frames, self.heads, self.head_dim).transpose(0, 1)

    def prefill(self, tokens: Sequence[int], threads: int | None = None) -> int:
        """The decoder's first tokens (after `encode`) in one native forward at positions 0 ..; returns the
        raw argmax (logits of the last one in ``self.logits``)."""
        ids = torch.tensor(list(tokens), dtype=torch.int64)
        return _kernels.native_prompt(self._native, ids.data_ptr(), ids.numel(), 0, self.logits.data_ptr(), isa_code(),
                                      threads or num_threads())

    def step(self, token: int, position: int, threads: int | None = None) -> int:
        """One decoder token at ``position``; returns the raw argmax (logits in ``self.logits``)."""
        return _kernels.native_step(self._native, int(token), int(position), self.logits.data_ptr(), isa_code(),
                                    threads or num_threads())

    def _pick(self, best: int, mask: torch.Tensor) -> int:
        """The greedy token after suppression: the C argmax unless it is suppressed (masking only lowers
        other scores, so an unsuppressed maximum stays the maximum)."""
        if not mask[best]:
            return best
        return int(self.logits.masked_fill_(mask, -float("inf")).argmax())

    @torch.no_grad()
    def generate(self, input_features: torch.Tensor, max_new_tokens: int, language: str | None = None,
                 threads: int | None = None) -> torch.Tensor:
        """Greedy tokens (1, new) of one clip's features (1, mels, frames), as HF's generate returns them
        (without the start tokens and the end-of-text token)."""
        if input_features.dim() != 3 or input_features.shape[0] != 1:
            raise ConfigError(f"the native decoder runs batch 1: features (1, mels, frames), got {tuple(input_features.shape)}")
        start = start_tokens(self.model, language)
        if max_new_tokens < 1 or len(start) + max_new_tokens > self.max_positions:
            raise ConfigError(f"{len(start)} start + {max_new_tokens} new tokens must fit max_positions={self.max_positions}")
        self.encode(input_features)
        n = threads or num_threads()
        tokens = [self._pick(self.prefill(start, n), self.first)]
        while len(tokens) < max_new_tokens and tokens[-1] != self.eos:
            tokens.append(self._pick(self.step(tokens[-1], len(start) + len(tokens) - 1, n), self.always))
        if tokens[-1] == self.eos:
            tokens.pop()  # HF's Whisper generate returns the text tokens: no start tokens, no end token
        return torch.tensor([tokens], dtype=torch.long)
