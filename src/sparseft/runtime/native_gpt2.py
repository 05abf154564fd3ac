"""GPT-2 on the native decode step (csrc/native_step.c): which models fit, and their description.

    >>> decoder = NativeDecoder(gpt2_model, max_positions=256)   # native_decode.NativeDecoder serves GPT-2 too

GPT-2's block is Whisper's decoder block without cross-attention: LayerNorm with biases, learned position
rows added to the token embedding, q|k|v as one projection (``c_attn``, 3 x hidden rows in that order),
``c_fc`` -> GELU -> ``c_proj``, a final LayerNorm and the tied output projection. Its projections are
transformers' ``Conv1D`` (weights stored (in, out)); dense ones are handed to C transposed, sparse ones are
``SparseLinear`` like any other. The MLP's GELU is the tanh form (``gelu_new``, mode 2 of the C step) or the
exact one (``gelu``, mode 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from sparseft.runtime.native_decode import Description

GPT2_FAMILY = frozenset({"GPT2LMHeadModel"})
GELU_MODES = {"gelu": 1, "gelu_new": 2, "gelu_pytorch_tanh": 2}


def unsupported_reason(model: nn.Module) -> str | None:
    """Why a GPT-2 model cannot run on the native step (None when it can)."""
    cfg = model.config
    if cfg.activation_function not in GELU_MODES:
        return f"activation {cfg.activation_function!r} (the native step runs {', '.join(sorted(GELU_MODES))})"
    if cfg.scale_attn_by_inverse_layer_idx or not cfg.scale_attn_weights:
        return "its attention scale differs by block or is off (the native step scales every block by 1/sqrt(head dim))"
    inner = model.transformer
    norms = [inner.ln_f] + [n for b in inner.h for n in (b.ln_1, b.ln_2)]
    if len({float(n.eps) for n in norms}) != 1:
        return "its LayerNorms differ in epsilon"
    tensors = [inner.wte.weight, inner.wpe.weight] + [n.weight for n in norms]
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        return "the native step needs fp32 weights on the CPU"
    return None


def shape(model: nn.Module) -> tuple[int, int, int, int, int]:
    """(blocks, query heads, KV heads, head dim, positions the learned position table holds)."""
    cfg = model.config
    return cfg.n_layer, cfg.n_head, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.n_positions


def describe(d: Description, model: nn.Module, max_positions: int, kcache: torch.Tensor,
             vcache: torch.Tensor) -> None:
    """Append GPT-2's header, head and blocks to ``d`` (the layout of ns_parse, native_step.h)."""
    from sparseft.runtime.native_decode import MAX_PARTS

    cfg, inner = model.config, model.transformer
    layers, heads, _, head_dim, _ = shape(model)
    width = cfg.n_inner or 4 * cfg.n_embd
    d.ints += [layers, cfg.n_embd, heads, heads, head_dim, width, model.lm_head.out_features, max_positions, 0, 1,
               GELU_MODES[cfg.activation_function], 0, d.address(inner.wte.weight), d.address(inner.ln_f.weight),
               d.address(inner.ln_f.bias), 0, d.address(inner.wpe.weight[:max_positions]), d.address(kcache),
               d.address(vcache), 0, 0]  # fmt: skip
    d.floats += [float(inner.ln_f.eps), float(inner.h[0].attn.scaling), 1.0, 1.0]
    d.floats.append(d.proj(model.lm_head))
    pad = [None] * (MAX_PARTS - 1)
    for block in inner.h:
        d.ints += [d.address(t) for t in (block.ln_1.weight, block.ln_2.weight, block.ln_1.bias, block.ln_2.bias)]
        d.ints += [0, 0, 1, 1]
        layers = [block.attn.c_attn, *pad, block.mlp.c_fc, *pad, block.attn.c_proj, block.mlp.c_proj, None, None]
        d.floats += [d.proj(layer) for layer in layers]
