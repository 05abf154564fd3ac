"""Which positions of a calibration batch hold real tokens, for each block stack.

Speech and text-pair batches are padded to their longest example (labels -100 and attention_mask 0 on
padding). The padded positions still run through every block, and their activations (a repeated pad
token attending to the sequence) are inputs the model never sees in use: in a batch of four Whisper
clips about a third of the decoder positions are padding. Layer statistics (SparseGPT's and GPTQ's
Hessians, Wanda's and OWL's norms) therefore count only the real positions, so a padded batch gives the
statistics its examples would give one at a time.

    >>> masks = stack_token_masks(model, batch, "decoder")   # labels != -100 for a Whisper batch
    >>> masks.hidden.shape, masks.context                    # (batch, positions), None: no encoder padding
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

#: What labels hold on padding (HF's ignore index, what `seq2seq_collate` writes).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenMasks:
    """Real positions of one batch: `hidden` for the stack's own hidden states (batch, positions), `context`
    for the encoder states a decoder block attends to; None where every position is real."""

    hidden: Tensor | None = None
    context: Tensor | None = None

    def fitted(self, hidden: Tensor) -> TokenMasks:
        """These masks, with `hidden` dropped if its shape is not the hidden states' (batch, positions):
        a model that adds or removes positions on the way keeps all of them rather than a wrong subset."""
        if self.hidden is not None and tuple(self.hidden.shape) != tuple(hidden.shape[:2]):
            return TokenMasks(None, self.context)
        return self


def real_rows(x: Tensor, mask: Tensor | None) -> Tensor:
    """The rows of x (batch, positions, features) at the mask's real positions, as (n, features); x as it is
    when there is no mask or the mask is not x's (batch, positions)."""
    if mask is None or tuple(x.shape[:-1]) != tuple(mask.shape):
        return x
    return x[mask.to(x.device)]


def _real(mask: Any) -> Tensor | None:
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        return None
    mask = mask.bool()
    return None if bool(mask.all()) else mask


def stack_token_masks(model: nn.Module, batch: Mapping[str, Any], stack: str) -> TokenMasks:
    """The real positions of `batch` (model inputs) as the blocks of `stack` ("encoder" or "decoder") see them.

    A decoder-only model: its attention_mask. An encoder-decoder: the encoder reads attention_mask (text;
    speech features have no padding); the decoder reads decoder_attention_mask, else labels != -100 (the
    model shifts labels right, so position t holds the token before label t), and attends to encoder
    states masked by attention_mask.
    """
    source = _real(batch.get("attention_mask"))
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False) or stack == "encoder":
        return TokenMasks(source, None)
    target = batch.get("decoder_attention_mask")
    if target is None and isinstance(batch.get("labels"), Tensor):
        target = batch["labels"] != IGNORE_INDEX
    return TokenMasks(_real(target), source)
