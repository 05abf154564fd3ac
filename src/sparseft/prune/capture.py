"""Recording what each transformer block receives, so the driver can replay blocks one at a time.

The model's own forward runs on the calibration batches with a pre-hook on the blocks of one stack;
each call is split into the hidden states (which the driver replaces by the outputs of the already
solved blocks) and the rest (masks, rotary embeddings, encoder states, position bias), kept as a
`BlockCall` that runs the block again on new hidden states.

    >>> inputs = capture_stack_inputs(model, [b for b in find_blocks(model) if b.stack == "decoder"], batches)
    >>> out = inputs.calls[0][0].run(block.module, inputs.hidden[0], device=None)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache

from sparseft.errors import ModelError
from sparseft.models.walk import Block
from sparseft.prune.token_masks import TokenMasks, stack_token_masks

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by a capture hook to end the model's forward once the needed inputs are recorded."""


@dataclass
class BlockCall:
    """How a stack called one block, minus the hidden states: positional args after them, and kwargs."""

    args: tuple
    kwargs: dict[str, Any]
    hidden_as_kwarg: bool

    @staticmethod
    def split(args: tuple, kwargs: dict[str, Any]) -> tuple[Tensor, BlockCall]:
        # A KV cache filled during capture would make every replay attend to stale keys: drop it.
        args = tuple(None if isinstance(a, Cache) else a for a in args)
        kwargs = {k: None if isinstance(v, Cache) else v for k, v in kwargs.items()}
        if args:
            return args[0], BlockCall(args[1:], kwargs, False)
        if "hidden_states" not in kwargs:
            raise ModelError("a block was called without hidden states (neither first argument nor keyword)")
        rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        return kwargs["hidden_states"], BlockCall((), rest, True)

    def run(self, block: nn.Module, hidden: Tensor, device: torch.device | None) -> Tensor:
        args, kwargs = to_device((self.args, self.kwargs), device)
        out = block(hidden_states=hidden, **kwargs) if self.hidden_as_kwarg else block(hidden, *args, **kwargs)
        return out if isinstance(out, Tensor) else out[0]  # tuples (T5, older HF) lead with hidden states

    def same_as(self, other: BlockCall) -> bool:
        """True when both calls pass the very same objects: then one capture serves every block."""
        return (
            self.hidden_as_kwarg == other.hidden_as_kwarg
            and len(self.args) == len(other.args)
            and self.kwargs.keys() == other.kwargs.keys()
            and all(_same(a, b) for a, b in zip(self.args, other.args, strict=True))
            and all(_same(v, other.kwargs[k]) for k, v in self.kwargs.items())
        )


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, (Tensor, nn.Module)) or isinstance(b, (Tensor, nn.Module)):
        return False
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # objects without a usable ==
        return False


def to_device(obj: Any, device: torch.device | None) -> Any:
    """`obj` (a tensor, or tuples, lists and dicts of them) moved to `device`; None leaves it where it is."""
    if device is None:
        return obj
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(x, device) for x in obj)
    if isinstance(obj, list):
        return [to_device(x, device) for x in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


@dataclass
class StackInputs:
    """Calibration inputs of one stack: hidden states per batch, each block's call per batch, and which
    positions of each batch are real tokens (what layer statistics count)."""

    hidden: list[Tensor]
    calls: list[list[BlockCall]]  # calls[block index in stack][batch index]
    masks: list[TokenMasks]


def _record_calls(
    model: nn.Module, blocks: Sequence[Block], batch: Mapping[str, Any], only_first: bool
) -> tuple[Tensor, list[BlockCall]]:
    """Run `model(**batch)` until the stack's first block (only_first) or past its last; return the calls."""
    hidden: list[Tensor] = []
    calls: list[BlockCall] = []

    def pre_hook(module, args, kwargs):
        h, call = BlockCall.split(args, kwargs)
        if not calls:  # later blocks' hidden states are recomputed from the pruned blocks anyway
            hidden.append(h)
        calls.append(call)
        if only_first:
            raise _StopForward

    def stop(module, args, output):
        raise _StopForward

    targets = blocks[:1] if only_first else blocks
    handles = [b.module.register_forward_pre_hook(pre_hook, with_kwargs=True) for b in targets]
    if not only_first:
        handles.append(blocks[-1].module.register_forward_hook(stop))
    try:
        model(**_without_cache(model, batch))
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if len(calls) != len(targets):
        raise ModelError(
            f"the forward called {len(calls)} of the {len(targets)} blocks of {blocks[0].name.rsplit('.', 1)[0]}; "
            "check that the calibration batches hold the inputs this model needs"
        )
    return hidden[0], calls


def _without_cache(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch plus use_cache=False where the forward takes it (T5's stacks ignore the top config)."""
    kwargs = dict(batch)
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs.setdefault("use_cache", False)
    return kwargs


def capture_stack_inputs(
    model: nn.Module, blocks: Sequence[Block], batches: Sequence[Mapping[str, Any]]
) -> StackInputs:
    """Inputs of every block of one stack, recorded as the model's own forward passes them.

    A probe forward on the first batch records every block's call. If each block gets the very same
    objects as the first (masks, rotary embeddings, encoder states: Llama, GPT-2, Whisper), later batches
    stop at the first block; otherwise (T5's position bias made by block 0, per-layer masks of Gemma)
    every batch runs the whole stack once with the dense weights still in place for later blocks.
    """
    hidden0, probe = _record_calls(model, blocks, batches[0], only_first=False)
    shared = all(call.same_as(probe[0]) for call in probe[1:])
    hidden = [hidden0]
    calls: list[list[BlockCall]] = [[call] for call in probe]
    for batch in batches[1:]:
        h, batch_calls = _record_calls(model, blocks, batch, only_first=shared)
        hidden.append(h)
        for i in range(len(blocks)):
            calls[i].append(batch_calls[0] if shared else batch_calls[i])
    log.debug("%s: %s block inputs", blocks[0].name, "shared" if shared else "per-block")
    masks = [stack_token_masks(model, batch, blocks[0].stack).fitted(h) for batch, h in zip(batches, hidden, strict=True)]
    return StackInputs(hidden, calls, masks)


