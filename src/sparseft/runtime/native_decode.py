"""Batch-1 greedy decoding of a Llama-family model with one C call per token (csrc/native_step.c).

    >>> model = load_model("runs/smollm2-70-int8")           # compressed (SparseLinear) or dense
    >>> decoder = NativeDecoder(model, max_positions=256)     # refuses a model it cannot run exactly
    >>> ids = decoder.generate(input_ids, max_new_tokens=64)  # the tokens of greedy model.generate()

A decode step of a small model is mostly not matmul: at batch 1 the ~120 kernel calls, norms, rotary,
attention and residuals of SmolLM2-135M cost 1-4 ms per token around 4-11 ms of kernels, even as one
compiled graph (BENCHMARKS.md, "where a decode step goes"). Here the whole step (every projection on
the sparse kernels or, for dense layers, a fp32 GEMV; the glue in plain C) is one call that releases
the GIL, and the KV cache lives in two fp32 tensors of ``max_positions`` rows per block.

The prompt is one native forward with its projections at batch P (the batched kernels; 47 -> ~20 ms for a
22-token prompt of SmolLM2 70% W8A8 against the HF forward it replaced; a long prompt on a CPU whose large
batches run as dense products goes through the model's forward instead, see `NativeDecoder.prefill`),
then every new token is one ``native_step``. With more than one thread allowed, `generate` picks 1 or all threads per step from measured
step times (`ThreadChooser`): a second thread whose core is busy elsewhere would slow the step down.

Supported: decoder-only models whose blocks are HF Llama's (``LLAMA_FAMILY``: Llama, Qwen2, Mistral and
models of their classes, e.g. SmolLM2), SiLU MLP, rotary frequencies that do not depend on the sequence
length, fp32 weights, and projections that are ``SparseLinear`` (any value format or activation mode), fused groups of them, or dense ``nn.Linear``;
and GPT-2 (``GPT2LMHeadModel``: learned positions, LayerNorm, tanh or exact GELU; runtime/native_gpt2.py).
`unsupported_reason` says why a model is not; callers fall back to ``model.generate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.models.layers import is_transposed, weight_matrix
from sparseft.runtime import _kernels, native_gpt2
from sparseft.runtime.dense_batch import dense_rows
from sparseft.runtime.fusion import FusedSibling, fused_layer
from sparseft.runtime.isa import isa_code, num_threads
from sparseft.runtime.linear import SparseLinear
from sparseft.runtime.thread_choice import ThreadChooser

LLAMA_FAMILY = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"})
# Rotary variants whose inverse frequencies are fixed at load time (dynamic / longrope ones change
# with the sequence length, which the C step does not follow).
STATIC_ROPE = frozenset({"default", "linear", "llama3", "yarn"})
MAX_PARTS = 3  # NS_MAX_PARTS of native_step.h
# Prompt tokens from which `NativeDecoder.prefill` runs the model's forward (dense-batch products) rather
# than the native one, by "W8A8 projections" (SmolLM2-135M, Zen 5, 1 thread: 64 tokens int8 131 -> 76 ms,
# W8A8 48 -> 53 ms; 128 tokens W8A8 117 -> 100 ms).
LONG_PROMPT = {False: 64, True: 128}


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot run on the native step (None when it can)."""
    name = type(model).__name__
    if name in native_gpt2.GPT2_FAMILY:
        return native_gpt2.unsupported_reason(model)
    if name not in LLAMA_FAMILY:
        known = sorted(LLAMA_FAMILY | native_gpt2.GPT2_FAMILY)
        return f"{name} is not one of the decoder classes the native step runs ({', '.join(known)})"
    cfg = model.config
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r} (the native step runs SiLU)"
    if len(set(getattr(cfg, "layer_types", None) or ["full_attention"])) > 1:
        return "its blocks mix full and sliding-window attention (the native step gives every block the same)"
    rotary = model.model.rotary_emb
    if getattr(rotary, "rope_type", "default") not in STATIC_ROPE:
        return f"rope type {rotary.rope_type!r} changes with the sequence length"
    norms = [model.model.norm] + [m for b in model.model.layers for m in (b.input_layernorm, b.post_attention_layernorm)]
    tensors = [model.model.embed_tokens.weight, rotary.inv_freq] + [n.weight for n in norms]
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        return "the native step needs fp32 weights on the CPU"
    return None


def sliding_window(config: object) -> int | None:
    """The attention window of every block (None: full attention), as HF's models read their config:
    ``layer_types`` where the config has them (Qwen2), else ``sliding_window`` (Mistral)."""
    kinds = getattr(config, "layer_types", None)
    if kinds is not None and "sliding_attention" not in kinds:
        return None
    return getattr(config, "sliding_window", None)


@dataclass
class Description:
    """The flat int64 / float64 arrays of ns_parse (native_step.h), and what they point into."""

    ints: list[int] = field(default_factory=list)
    floats: list[float] = field(default_factory=list)
    keep: list[object] = field(default_factory=list)

    def address(self, t: torch.Tensor | None) -> int:
        if t is None:
            return 0
        t = t.detach().contiguous()
        self.keep.append(t)
        return t.data_ptr()

    def build(self) -> object:
        """The C model (a capsule) these arrays describe; ``keep`` must outlive it."""
        ints = torch.tensor(self.ints, dtype=torch.int64)
        floats = torch.tensor(self.floats, dtype=torch.float64)
        return _kernels.native_new(ints.data_ptr(), ints.numel(), floats.data_ptr(), floats.numel())

    def proj(self, layer: nn.Module | None) -> float:
        """Append a projection's ints; returns its float (the static input scale)."""
        if layer is None:
            self.ints += [0] * 6
            return 0.0
        if isinstance(layer, SparseLinear):
            handle = layer.kernel_handle()
            self.keep.append(handle)
            self.ints += [_kernels.weight_address(handle.capsule), 0, 0, layer.out_features, layer.in_features,
                          handle.act_code]
            return handle.input_scale
        if (type(layer) is nn.Linear or is_transposed(layer)) and layer.weight.dtype == torch.float32:
            weight = weight_matrix(layer)  # (out, in); a Conv1D's is copied out of its (in, out) layout
            self.ints += [0, self.address(weight), self.address(layer.bias), *weight.shape, 0]
            return 0.0
        raise ConfigError(f"the native step runs SparseLinear and fp32 nn.Linear projections, not {type(layer).__name__}")


def projection_parts(module: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    """The layers computing ``names`` of ``module``: one fused layer, or each sibling."""
    layers = [getattr(module, n) for n in names]
    if all(isinstance(m, FusedSibling) for m in layers) and len({id(m.group) for m in layers}) == 1:
        return [layers[0].group.fused]
    if any(isinstance(m, FusedSibling) for m in layers):
        raise ConfigError(f"{type(module).__name__}: {'/'.join(names)} are fused in another grouping")
    return _fused_if_possible(layers)


def _fused_if_possible(layers: list[nn.Module]) -> list[nn.Module]:
    """Sparse siblings of one value type as one fused weight (one kernel call); anything else as it is."""
    fused = fused_layer(layers) if all(isinstance(m, SparseLinear) for m in layers) else None
    return [fused] if fused is not None else layers


def _llama_shape(model: nn.Module) -> tuple[int, int, int, int, None]:
    """(blocks, query heads, KV heads, head dim, position limit: none, rotary) of a Llama-family model."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return len(model.model.layers), cfg.num_attention_heads, cfg.num_key_value_heads, head_dim, None


def _w8a8(layer: nn.Module) -> bool:
    return isinstance(layer, SparseLinear) and layer.act != "none"


class NativeDecoder:
    """A Llama-family or GPT-2 HF model (dense or compressed) as one C decode step per token; see the module doc.

    ``max_positions``: prompt + new tokens the KV cache holds. The model itself is not changed; the
    decoder shares its weights (and holds fused copies of unfused q/k/v and gate/up sparse weights)."""

    def __init__(self, model: nn.Module, max_positions: int = 2048) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ConfigError(f"native decode: {reason}")
        if max_positions < 1:
            raise ConfigError(f"max_positions must be >= 1, got {max_positions}")
        self._gpt2 = type(model).__name__ in native_gpt2.GPT2_FAMILY
        layers, self.heads, self.kv_heads, self.head_dim, limit = (native_gpt2.shape if self._gpt2 else _llama_shape)(model)
        if limit is not None and max_positions > limit:
            raise ConfigError(f"max_positions must be at most {limit} (the model's positions), got {max_positions}")
        self.model, self.max_positions = model, max_positions
        self.vocab = model.lm_head.out_features
        shape = (layers, self.kv_heads, max_positions, self.head_dim)
        self.kcache, self.vcache = torch.zeros(shape), torch.zeros(shape)
        self.logits = torch.empty(self.vocab)
        self.threads: ThreadChooser | None = None  # generate()'s thread choice (its .steps: steps per count)
        d = Description()
        if self._gpt2:
            self._window, self._w8a8 = None, _w8a8(model.transformer.h[0].attn.c_attn)
            native_gpt2.describe(d, model, max_positions, self.kcache, self.vcache)
        else:
            self._describe_llama(d, model)
        self._native, self._keep = d.build(), d.keep

    def _describe_llama(self, d: Description, model: nn.Module) -> None:
        cfg, inner = model.config, model.model
        window = self._window = sliding_window(cfg)
        first = projection_parts(inner.layers[0].self_attn, ("q_proj", "k_proj", "v_proj"))[0]
        self._w8a8 = _w8a8(first)
        d.ints += [len(inner.layers), cfg.hidden_size, self.heads, self.kv_heads, self.head_dim,
                   cfg.intermediate_size, self.vocab, self.max_positions, int(window or 0), 0, 0, 0,
                   d.address(inner.embed_tokens.weight), d.address(inner.norm.weight), 0,
                   d.address(inner.rotary_emb.inv_freq), 0, d.address(self.kcache), d.address(self.vcache), 0, 0]
        attn0 = inner.layers[0].self_attn
        d.floats += [float(inner.norm.variance_epsilon), float(attn0.scaling),
                     float(inner.rotary_emb.attention_scaling), 1.0]
        d.floats.append(d.proj(model.lm_head))
        for block in inner.layers:
            self._describe_block(d, block)

    @staticmethod
    def _describe_block(d: Description, block: nn.Module) -> None:
        qkv = projection_parts(block.self_attn, ("q_proj", "k_proj", "v_proj"))
        gate_up = projection_parts(block.mlp, ("gate_proj", "up_proj"))
        d.ints += [d.address(block.input_layernorm.weight), d.address(block.post_attention_layernorm.weight),
                   0, 0, 0, 0, len(qkv), len(gate_up)]
        pad = [None] * MAX_PARTS
        layers = (qkv + pad)[:MAX_PARTS] + (gate_up + pad)[:MAX_PARTS] + [block.self_attn.o_proj, block.mlp.down_proj,
                                                                          None, None]
        d.floats += [d.proj(layer) for layer in layers]

    def step(self, token: int, position: int, threads: int | None = None) -> int:
        """Run ``token`` at ``position`` on ``threads`` (default: the runtime's); returns the greedy next
        token (logits in ``self.logits``)."""
        return _kernels.native_step(self._native, int(token), int(position), self.logits.data_ptr(), isa_code(),
                                    threads or num_threads())

    def prefill(self, input_ids: torch.Tensor, threads: int | None = None) -> int:
        """The prompt (1, P) in one native forward (its projections at batch P, keys / values into the
        cache, logits of the last position only). Returns the next token.

        A long prompt on a CPU whose large batches run as dense products (runtime/dense_batch.py) goes
        through the model's own forward instead, its keys and values copied into the cache: from
        `LONG_PROMPT` tokens that measured faster (SmolLM2-135M, Zen 5, 1 thread, 512 tokens: 50% int8
        1089 -> 677 ms, 70% W8A8 598 -> 553 ms; dense bf16 641 ms)."""
        tokens = input_ids[0].to(torch.int64).contiguous()
        if self._long_prompt() and tokens.numel() >= self._long_prompt():
            return self._prefill_with_model(input_ids)
        return _kernels.native_prompt(self._native, tokens.data_ptr(), tokens.numel(), 0, self.logits.data_ptr(),
                                      isa_code(), threads or num_threads())

    def _long_prompt(self) -> int:
        """Prompt length from which `prefill` runs the model's forward now; 0 = never."""
        if self._window or not dense_rows(self._w8a8):
            return 0
        return LONG_PROMPT[self._w8a8]

    @torch.no_grad()
    def _prefill_with_model(self, input_ids: torch.Tensor) -> int:
        from transformers import DynamicCache

        cache, n = DynamicCache(), input_ids.shape[1]
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        for i, layer in enumerate(cache.layers):  # HF caches keys after rotary, as the native step does
            self.kcache[i, :, :n] = layer.keys[0]
            self.vcache[i, :, :n] = layer.values[0]
        self.logits.copy_(out.logits[0, -1])
        return int(self.logits.argmax())

    def _chooser(self) -> ThreadChooser:
        """The step-time based thread choice, kept across generate() calls while the thread setting holds."""
        most = num_threads()
        if self.threads is None or max(self.threads.candidates) != most:
            self.threads = ThreadChooser(most)
        return self.threads

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy tokens of a (1, P) prompt: (1, P + new), stopping after ``eos_token_id`` if given."""
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise ConfigError(f"native decode runs batch 1: input_ids of shape (1, length), got {tuple(input_ids.shape)}")
        prompt = input_ids.shape[1]
        if max_new_tokens < 1 or prompt + max_new_tokens > self.max_positions:
            raise ConfigError(f"prompt {prompt} + {max_new_tokens} new tokens must fit max_positions={self.max_positions}")
        chooser = self._chooser()
        tokens = [self.prefill(input_ids, chooser.threads())]
        while len(tokens) < max_new_tokens and tokens[-1] != eos_token_id:
            n = chooser.threads()
            start = time.perf_counter()
            tokens.append(self.step(tokens[-1], prompt + len(tokens) - 1, n))
            chooser.record(n, time.perf_counter() - start)
        return torch.cat([input_ids, torch.tensor([tokens], dtype=input_ids.dtype)], dim=1)
