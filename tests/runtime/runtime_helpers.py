"""Helpers of the runtime tests: random masked weights and a tiny pruned Llama."""

from __future__ import annotations

import torch


def masked(shape: tuple[int, int], sparsity: float, seed: int = 0) -> torch.Tensor:
    """A random (out, in) weight with about ``sparsity`` zeros."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return w * (torch.rand(shape, generator=g) >= sparsity)


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
