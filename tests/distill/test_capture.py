"""Hidden-state capture: one state per block, only while recording, padding masks per stack."""

from __future__ import annotations

import torch

from sparseft.distill import HiddenStateCapture, layer_masks, stack_padding_masks
from sparseft.models import find_blocks
from tiny_models import build_tiny_model


def test_captures_every_block_output_of_a_causal_lm_only_while_recording():
    model = build_tiny_model("llama")
    capture = HiddenStateCapture(model)
    ids = torch.randint(0, 128, (2, 7))
    with torch.no_grad():
        model(input_ids=ids)  # outside recording: nothing kept
        assert capture.states == {}
        with capture.recording() as states:
            out = model(input_ids=ids, output_hidden_states=True)
    assert list(states) == [b.name for b in find_blocks(model)]
    # HF's hidden_states[i + 1] is block i's output, except the last, which HF returns after the final norm.
    for i, state in enumerate(capture.ordered()[:-1]):
        torch.testing.assert_close(state, out.hidden_states[i + 1])
    capture.remove()
    with torch.no_grad(), capture.recording() as states:
        model(input_ids=ids)
    assert states == {}


def test_encoder_decoder_states_and_masks_per_stack():
    model = build_tiny_model("t5")
    capture = HiddenStateCapture(model)
    batch = {
        "input_ids": torch.randint(1, 128, (2, 6)),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]),
        "labels": torch.tensor([[5, 6, 7, -100], [5, 6, -100, -100]]),
    }
    decoder_input_ids = torch.tensor([[0, 5, 6, 7], [0, 5, 6, 0]])  # the tiny config has no start token
    with torch.no_grad(), capture.recording():
        model(**batch, decoder_input_ids=decoder_input_ids)
    states = capture.ordered()
    stacks = [b.stack for b in capture.blocks]
    assert stacks == ["encoder", "encoder", "decoder", "decoder"]
    assert [tuple(s.shape) for s in states] == [(2, 6, 64)] * 2 + [(2, 4, 64)] * 2
    masks = layer_masks(capture.blocks, batch, is_encoder_decoder=True)
    assert masks[0] is batch["attention_mask"]
    assert masks[2].tolist() == [[True, True, True, False], [True, True, False, False]]


def test_decoder_only_mask_is_the_attention_mask_not_the_labels():
    batch = {"input_ids": torch.ones(1, 3), "attention_mask": torch.tensor([[1, 1, 0]]),
             "labels": torch.tensor([[-100, 4, -100]])}
    masks = stack_padding_masks(batch, is_encoder_decoder=False)
    assert masks["decoder"] is batch["attention_mask"]


def test_whisper_encoder_has_no_token_mask():
    model = build_tiny_model("whisper")
    capture = HiddenStateCapture(model)
    batch = {"input_features": torch.randn(1, 16, 64), "decoder_input_ids": torch.tensor([[1, 5, 6]])}
    with torch.no_grad(), capture.recording():
        model(**batch)
    assert len(capture.ordered()) == 4
    assert stack_padding_masks(batch, is_encoder_decoder=True) == {"encoder": None, "decoder": None}
