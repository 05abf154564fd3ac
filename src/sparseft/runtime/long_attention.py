"""Attention over long query blocks in bf16: Whisper's encoder (1500 frames) and long prompts.

At 1 thread PyTorch's fp32 CPU attention (flash kernel) runs at ~30 GFLOP/s: for Whisper tiny it is
84% of the encoder's time once the Linears are sparse (measured: 446 of 529 ms). The two products of
attention are plain matrix products, which oneDNN runs in bf16 on AMX tiles or AVX512-BF16 dot products
(measured on an AMD EPYC with AVX512-BF16, 6 heads x 1500 x 64, under load: QK^T 4.8 ms, PV 4.5 ms,
softmax 8.9 ms, vs 113 ms for fp32 flash attention). So, where the CPU has either, for
queries of at least `LONG_QUERY` rows this computes softmax(q k^T * scale + mask) v with bf16 inputs
and bf16 scores (each product accumulates in fp32 and is rounded once, as bf16 eager attention in
transformers does), over blocks of query rows to keep the scores in cache. Shorter queries (a decode
step, a short prompt) and anything unusual (dropout, softcap, a mask of another shape) take the
fallback attention unchanged.

    >>> out, _ = long_attention(module, q, k, v, None, scaling=0.125)   # (batch, rows, heads, dim)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

LONG_QUERY = 256
# Query rows per block. Smaller blocks (scores in L2) measured faster on random q/k/v alone (Zen 5, 1 thread:
# 256 rows 31.5 ms, 64 rows 22.3 ms per 6 x 1500 x 1500 layer) but not in Whisper tiny's whole encoder (best
# of 12 interleaved: 256 rows 252 ms, 128: 251, 64: 257), so the block stays 256.
ROW_BLOCK = 256


def _expand_kv(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Grouped KV heads repeated to one per query head."""
    return t if t.shape[1] == heads else t.repeat_interleave(heads // t.shape[1], dim=1)


def bf16_matmul_is_fast() -> bool:
    """The CPU multiplies bf16 matrices natively (AMX tiles or AVX512-BF16); elsewhere bf16 is emulated."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def _usable(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, kwargs: dict) -> bool:
    if query.shape[-2] < LONG_QUERY or query.device.type != "cpu" or query.requires_grad:
        return False
    if kwargs.get("dropout") or any(kwargs.get(k) is not None for k in ("softcap", "position_bias", "sinks")):
        return False
    if query.shape[1] % key.shape[1]:
        return False
    mask_ok = attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[-1] == key.shape[-2])
    return mask_ok and bf16_matmul_is_fast()


def bf16_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                   scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v for (batch, heads, rows, dim) tensors, bf16 products, output in the
    query's dtype as (batch, rows, heads, dim). A bool mask keeps True; a float mask is added."""
    heads = query.shape[1]
    k = _expand_kv(key, heads).to(torch.bfloat16).transpose(-1, -2).contiguous()
    v = _expand_kv(value, heads).to(torch.bfloat16)
    out = torch.empty(query.shape, dtype=query.dtype)
    for start in range(0, query.shape[-2], ROW_BLOCK):
        rows = slice(start, start + ROW_BLOCK)
        scores = torch.matmul((query[:, :, rows] * scale).to(torch.bfloat16), k)
        if attention_mask is not None:
            mask = attention_mask[:, :, rows] if attention_mask.shape[-2] > 1 else attention_mask
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(scores.dtype)
        out[:, :, rows] = torch.matmul(scores.softmax(-1), v)
    return out.transpose(1, 2).contiguous()


def long_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, fallback: Callable | None = None, **kwargs) -> tuple:
    """An HF attention function: `bf16_attention` for long query blocks, else `fallback` (HF's sdpa)."""
    if not _usable(query, key, attention_mask, kwargs):
        if fallback is None:
            from transformers.integrations.sdpa_attention import sdpa_attention_forward as fallback
        return fallback(module, query, key, value, attention_mask, **kwargs)
    scale = kwargs.get("scaling")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return bf16_attention(query, key, value, attention_mask, scale), None
