"""Where the weights of a block are while the sequential driver works on it (memory or disk).

    >>> oneshot(model, batches, residency=InMemory())            # the default
    >>> oneshot(model, batches, residency=StreamedWeights(...))   # sparseft.models.lazy: one block loaded at a time
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import torch

from sparseft.models.mask_io import Masks
from sparseft.models.walk import Block


class BlockResidency(Protocol):
    """Where the weights of a block are while the driver works on it.

    The driver calls `enter` before it runs or prunes a block and `leave` when done with it (with the
    block's masks; what `leave` returns stays in the report), or `release` when it only read it, and
    captures a stack's inputs inside `capturing`. `InMemory` (the default) keeps the model in memory and moves a block to `device` and
    back; `sparseft.models.lazy.StreamedWeights` loads each block from disk instead and writes it out
    pruned, so a model larger than memory is pruned one block at a time by this very driver.
    """

    def capturing(self, blocks: Sequence[Block]) -> AbstractContextManager: ...

    def enter(self, block: Block, device: torch.device | None) -> None: ...

    def leave(self, block: Block, masks: Masks) -> Masks: ...

    def release(self, block: Block) -> None:
        """Done with a block that was only read (a statistics pass): nothing is written."""
        ...


class InMemory:
    """The whole model in memory; each block visits `device` (when given) while it is processed."""

    def __init__(self) -> None:
        self._home: dict[str, torch.device] = {}

    def capturing(self, blocks: Sequence[Block]) -> AbstractContextManager:
        return nullcontext()

    def enter(self, block: Block, device: torch.device | None) -> None:
        if device is not None:
            self._home[block.name] = next(block.module.parameters()).device
            block.module.to(device)

    def leave(self, block: Block, masks: Masks) -> Masks:
        self.release(block)
        return masks

    def release(self, block: Block) -> None:
        if block.name in self._home:
            block.module.to(self._home.pop(block.name))
