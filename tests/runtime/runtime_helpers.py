"""Helpers of the runtime tests: random masked weights and a tiny pruned Llama."""

from __future__ import annotations

import torch


def masked(shape: tuple[int, int], sparsity: float, seed: int = 0) -> torch.Tensor:
    """A random (out, in) weight with about ``sparsity`` zeros."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return w * (torch.rand(shape, generator=g) >= sparsity)


def all_nonzero(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A random dense (out, in) weight whose int8 and int4 rounding keeps every value nonzero
    (|w| in [0.5, 1.5] of either sign), so every column stays stored."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    return sign * (0.5 + torch.rand(shape, generator=g))


def tiny_llama(sparsity: float = 0.7, seed: int = 0):
    """A 2-layer random Llama (hidden 64) with its Linear weights randomly masked."""
    from tiny_models import build_tiny_model

    model = build_tiny_model("llama", seed, vocab_size=256, tie_word_embeddings=True)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
                mod.weight.mul_(torch.rand_like(mod.weight) >= sparsity)
    return model


def delta_formats() -> list[str]:
    """The value formats the delta index stores (grouped-scale formats such as int4 take the bitmask only)."""
    from sparseft.runtime.formats import FORMATS, get_format

    return [f for f in FORMATS if "delta" in get_format(f).indexes]
