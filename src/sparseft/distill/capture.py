"""Capture transformer block outputs with forward hooks, only while recording, and only the hidden state.

Hooks sit on the blocks found by `find_blocks` (any architecture; encoder blocks before decoder blocks).
Each hook keeps just the block's output hidden state (not attention maps or caches) and only inside
`recording()`, so evaluation, generation or perplexity passes keep nothing. A teacher is run under
`torch.no_grad()`, so its states hold no graph; the student's states are part of the graph the loss
needs anyway. The embedding output is not captured (SquareHead starts at the first block's output).

>>> capture = HiddenStateCapture(model)                 # hooks stay until capture.remove()
>>> with capture.recording() as states:
...     model(**batch)
>>> [s.shape for s in states.values()]                  # {block name: (batch, tokens, hidden)}
>>> masks = stack_padding_masks(batch, model.config.is_encoder_decoder)
>>> per_layer = [masks[b.stack] for b in capture.blocks]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from sparseft.models.walk import Block, find_blocks


def block_hidden_state(output: Any) -> Tensor:
    """The hidden state in a block's output: the tensor itself, or the first item of a tuple (T5, older HF)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    hidden = getattr(output, "hidden_states", None) or getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    raise TypeError(f"cannot find a hidden state in a block output of type {type(output).__name__}")


class HiddenStateCapture:
    """Forward hooks that record block outputs of `model` inside `recording()`."""

    def __init__(self, model: nn.Module, blocks: Sequence[Block] | None = None):
        self.blocks = list(blocks) if blocks is not None else find_blocks(model)
        if not self.blocks:
            raise ValueError(f"{type(model).__name__} has no transformer blocks to capture")
        self.states: dict[str, Tensor] = {}
        self._recording = False
        self._handles = [b.module.register_forward_hook(self._hook(b.name)) for b in self.blocks]

    def _hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._recording:
                self.states[name] = block_hidden_state(output)

        return hook

    @contextlib.contextmanager
    def recording(self) -> Iterator[dict[str, Tensor]]:
        """Record during the block; the yielded dict is filled by the forward pass(es) inside it."""
        self.states = {}
        self._recording = True
        try:
            yield self.states
        finally:
            self._recording = False

    def ordered(self, states: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        """The captured states in block order; raises if a block did not run (e.g. an encoder was skipped)."""
        states = self.states if states is None else states
        missing = [b.name for b in self.blocks if b.name not in states]
        if missing:
            raise RuntimeError(f"blocks produced no output during recording: {missing[:3]}")
        return [states[b.name] for b in self.blocks]

    def clear(self) -> None:
        """Drop the references to the last states (frees the teacher's activations early)."""
        self.states = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def stack_padding_masks(batch: Mapping[str, Any], is_encoder_decoder: bool) -> dict[str, Tensor | None]:
    """Real-token masks, (batch, tokens), per block stack ("encoder", "decoder"); None = no padding.

    Decoder-only: the attention mask. Encoder-decoder: the encoder uses `attention_mask` when the encoder
    reads tokens (speech encoders downsample their features, so their mask would not line up), and the
    decoder uses `decoder_attention_mask`, else the positions with a label (padded labels are -100).
    """
    attention = batch.get("attention_mask")
    if not is_encoder_decoder:
        return {"decoder": attention, "encoder": None}
    encoder = attention if "input_ids" in batch or "inputs_embeds" in batch else None
    decoder = batch.get("decoder_attention_mask")
    if decoder is None and batch.get("labels") is not None:
        decoder = batch["labels"] != -100
    return {"encoder": encoder, "decoder": decoder}


def layer_masks(blocks: Sequence[Block], batch: Mapping[str, Any], is_encoder_decoder: bool) -> list[Tensor | None]:
    """One padding mask per captured block, from its stack."""
    by_stack = stack_padding_masks(batch, is_encoder_decoder)
    return [by_stack[b.stack] for b in blocks]

