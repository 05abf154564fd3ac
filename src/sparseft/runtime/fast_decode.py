"""Faster decoding of an HF causal LM: fused projections, a static KV cache and a compiled decoder step.

    >>> model = load_compressed("runs/smollm2-70-int8")
    >>> prepare_for_decode(model)                     # in place: fuse q/k/v and gate/up, compile the step
    >>> model.generate(ids, max_new_tokens=128)       # unchanged API; the first call compiles (minutes)
    >>> greedy_decode(model, ids, 128)                # the same tokens without generate's per-token Python

Encoder-decoder models (Whisper, T5) are prepared the same way for ``model.generate``: self-attention
q/k/v and feed-forward siblings are fused, and in cross-attention only k/v (they read the encoder's
states, q the decoder's: runtime/fusion.py); ``greedy_decode`` drives decoder-only models.

At batch 1 a token runs hundreds of small ops, and the time outside the Linear layers (norms, rotary,
attention, KV cache, Python) is a third to a half of it. What this module cuts:

- ``fuse_projections`` (runtime/fusion.py): one kernel call for q/k/v and one for gate/up;
- ``compile``: HF's static KV cache (fixed shapes) and ``torch.compile`` (inductor, C++ for the
  elementwise ops, one graph, no breaks) of the model's forward for every step after the prompt;
- the compiled graph calls each SparseLinear as one lean ``sparseft::linear`` op (runtime/ops.py: x and
  two ints per call), W8A8 layers included, so nothing needs swapping here;
- ``_decode_attention``: for one query token with grouped KV heads, HF's compiled sdpa path copies K and
  V of the whole static cache to every query head each step; this folds the heads of a group instead.

Compiling takes 1-4 minutes for SmolLM2-135M on 2 cores (the first time; inductor caches its C++ in
/tmp/torchinductor_$USER). Shapes are fixed (``dynamic=False``): ``max_cache_len`` sizes the cache for
the longest prompt + new tokens, so that later calls reuse the graph. Every prepared model of a process
shares the compiled code of its class's forward: beyond 8 models, raise
``torch._dynamo.config.recompile_limit``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparseft.errors import ConfigError
from sparseft.runtime.activations import fuse_activations
from sparseft.runtime.fusion import fuse_projections
from sparseft.runtime.suppression import use_cached_suppression

ATTENTION = "sparseft_sdpa"
ATTENTION_LONG = "sparseft_sdpa_long"


def _decode_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """HF's sdpa attention, except for one query token with grouped KV heads: the query heads of a group
    become the query rows of one KV head (as HF does in eager mode only)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n_rep = getattr(module, "num_key_value_groups", 1)
    b, h, q_len, d = query.shape
    plain = all(kwargs.get(k) is None for k in ("position_bias", "cache", "softcap")) and not kwargs.get(
        "dropout"
    )
    mask_ok = attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[1] == 1)
    if n_rep == 1 or q_len != 1 or not plain or not mask_ok or key.shape[1] * n_rep != h:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    q = query.reshape(b, h // n_rep, n_rep, d)
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=kwargs.get("scaling"))
    return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None


def _long_or_decode_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, **kwargs: object) -> tuple[torch.Tensor, None]:
    """Long query blocks in bf16 (runtime/long_attention.py), everything else as `_decode_attention`."""
    from sparseft.runtime.long_attention import long_attention

    return long_attention(module, query, key, value, attention_mask, fallback=_decode_attention, **kwargs)


def use_decode_attention(model: nn.Module, long_bf16: bool = False) -> bool:
    """Switch a model that uses HF's "sdpa" attention to ``_decode_attention`` (registered as
    "sparseft_sdpa", same masks), with ``long_bf16`` also to bf16 attention for long query blocks
    ("sparseft_sdpa_long"); False (unchanged) for any other attention implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    name = ATTENTION_LONG if long_bf16 else ATTENTION
    current = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if current not in ("sdpa", ATTENTION, ATTENTION_LONG):
        return False
    AttentionInterface.register(name, _long_or_decode_attention if long_bf16 else _decode_attention)
    AttentionMaskInterface.register(name, sdpa_mask)
    model.set_attn_implementation(name)
    return True


def _settings(model: nn.Module) -> dict[str, object]:
    return getattr(
        model, "_sparseft_decode", {"dynamic": False, "max_cache_len": None, "backend": "inductor"}
    )


# Inductor options: the graph's wrapper in C++ rather than Python, and no per-call size asserts on its
# ~750 inputs (the guards check them already): -1 ms per SmolLM2 step, +1 min of compiling.
INDUCTOR_OPTIONS = {"cpp_wrapper": True, "size_asserts": False}


def _compile_kwargs(model: nn.Module) -> dict[str, object]:
    opts = _settings(model)
    kw = {"fullgraph": True, "dynamic": opts["dynamic"], "backend": opts["backend"]}
    if opts["backend"] == "inductor":
        kw["options"] = dict(INDUCTOR_OPTIONS)
    return kw


def _compiled_forward(model: nn.Module) -> Callable:
    """``model.__call__`` compiled (one graph, fullgraph), kept on the model."""
    fn = getattr(model, "_sparseft_compiled", None)
    if fn is None:
        fn = torch.compile(model.__call__, **_compile_kwargs(model))
        object.__setattr__(model, "_sparseft_compiled", fn)  # not a submodule
    return fn


def _static_cache(model: nn.Module, batch: int, length: int) -> object:
    """A StaticCache of at least ``length`` positions for ``batch`` rows, reused (reset) between calls
    so that the compiled step sees the same tensors."""
    from transformers import StaticCache

    cache, size = getattr(model, "_sparseft_cache", (None, (0, 0)))
    if cache is None or size[0] != batch or size[1] < length:
        cache = StaticCache(config=model.config, max_cache_len=length)
        object.__setattr__(model, "_sparseft_cache", (cache, (batch, length)))
    else:
        cache.reset()
    return cache


@torch.no_grad()
def greedy_decode(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    compile: bool = True,
) -> torch.Tensor:
    """Greedy decoding with a static KV cache and (``compile``) the compiled decoder step: the tokens of
    ``model.generate(input_ids, do_sample=False, max_new_tokens=...)``, without its per-token Python.

    Returns (batch, prompt + new) ids. Rows that reached ``eos_token_id`` continue with it, and decoding
    stops when every row has. The prompt runs eagerly; every later step is one call of the compiled
    forward (compiled on the first call, reused while the cache size is unchanged)."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise ConfigError("greedy_decode drives decoder-only models; use model.generate for encoder-decoder ones")
    if input_ids.dim() != 2 or max_new_tokens < 1:
        raise ConfigError("greedy_decode needs input_ids of shape (batch, length) and max_new_tokens >= 1")
    batch, prompt = input_ids.shape
    cache = _static_cache(model, batch, max(prompt + max_new_tokens, _settings(model)["max_cache_len"] or 0))
    forward = _compiled_forward(model) if compile else model
    tok = model(input_ids=input_ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
    out = [input_ids, tok]
    done = None if eos_token_id is None else tok == eos_token_id
    for i in range(max_new_tokens - 1):
        if done is not None and bool(done.all()):
            break
        pos = torch.full((batch, 1), prompt + i, dtype=torch.long)
        # The first step checks dynamo's guards (~0.5-1 ms on SmolLM2) and so picks the graph of this model
        # and cache; the later steps differ only in tensor values and skip the check.
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=compile and i > 0):
            logits = forward(input_ids=tok, position_ids=pos, past_key_values=cache, use_cache=True).logits
        tok = logits[:, -1:].argmax(-1)
        if done is not None:
            tok = torch.where(done, eos_token_id, tok)
            done |= tok == eos_token_id
        out.append(tok)
    return torch.cat(out, dim=1)


def compile_generate(model: nn.Module) -> None:
    """Make ``model.generate`` use HF's static KV cache and its torch.compile'd forward after the prompt
    (HF's own auto-compile, enabled on the CPU), with this model's settings (see prepare_for_decode)."""
    from transformers import CompileConfig

    opts = _settings(model)
    gc = model.generation_config
    gc.cache_implementation = "static"
    if opts["max_cache_len"] is not None:
        gc.max_cache_len = opts["max_cache_len"]
    kw = _compile_kwargs(model)
    # torch.compile takes a mode or backend options, not both: the inductor options replace the mode
    cc = CompileConfig(mode=None if "options" in kw else "default", **kw)
    cc._compile_all_devices = True  # HF auto-compiles on accelerators only unless told
    gc.compile_config = cc


def prepare_for_decode(
    model: nn.Module,
    compile: bool = True,
    fuse: bool = True,
    max_cache_len: int | None = None,
    dynamic: bool | None = False,
    backend: str = "inductor",
    long_attention: bool = False,
) -> dict[str, object]:
    """Prepare an HF causal LM or encoder-decoder model (dense or with SparseLinear layers) for fast
    decoding, in place.

    ``fuse``: fuse q/k/v and gate/up, in cross-attention only k/v (runtime/fusion.py), and tanh-form GELU
    modules into one op (runtime/activations.py). ``compile``:
    ``model.generate`` and ``greedy_decode`` then run every step after the prompt as one compiled graph
    over a static KV cache of ``max_cache_len`` positions (default: prompt + new tokens of the call);
    ``dynamic``: passed to torch.compile (False: fixed shapes, one graph per cache size); ``backend``:
    torch.compile's ("eager" traces without generating code: tests); ``long_attention``: attention over
    query blocks of 256+ rows (Whisper's encoder, long prompts) in bf16, where the CPU has AMX or AVX512-BF16
    (runtime/long_attention.py; changes the numerics like bf16 attention does). Whisper's token suppression
    runs on masks built once (runtime/suppression.py; the same tokens). A dense model prepared the same way
    is the fair baseline of a prepared sparse one. Returns {"fused": [groups], "compiled": bool, ...}."""
    if compile and not hasattr(model, "generation_config"):
        raise ConfigError("compile=True needs a transformers generation model (one with .generation_config)")
    settings = {"dynamic": dynamic, "max_cache_len": max_cache_len, "backend": backend}
    object.__setattr__(model, "_sparseft_decode", settings)
    fused = fuse_projections(model) if fuse else []
    activations = fuse_activations(model) if fuse else []
    attention = use_decode_attention(model, long_bf16=long_attention) if compile or long_attention else False
    if compile:
        compile_generate(model)
    suppression = use_cached_suppression(model)
    return {"fused": fused, "activations": activations, "attention": attention, "compiled": compile,
            "cached_suppression": suppression}
