"""Run calibration batches through a model with temporary hooks on some of its modules.

>>> run_with_hooks(model, {layer: record_input}, batches, pre=True)   # hooks removed afterwards
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn


def run_with_hooks(
    model: nn.Module,
    hooks: Mapping[nn.Module, Callable],
    batches: Iterable[Mapping[str, Any]],
    pre: bool = False,
) -> None:
    """`model(**batch)` for every batch with `hooks` attached (forward pre-hooks if `pre`), then detach them."""
    register = (lambda m, h: m.register_forward_pre_hook(h)) if pre else (lambda m, h: m.register_forward_hook(h))
    handles = [register(module, hook) for module, hook in hooks.items()]
    try:
        for batch in batches:
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
