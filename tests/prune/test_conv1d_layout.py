"""GPT-2's Conv1D stores its weight (in, out); every mask sparseft returns, saves and applies is (out, in).

The checks transpose independently of sparseft (numpy's `.T` on the stored parameter), so a helper
that transposed twice, or not at all, fails them; tiny GPT-2 has non-square (c_attn 192x64, c_fc 256x64,
mlp.c_proj 64x256) and square (attn.c_proj 64x64) Conv1D layers, where only the values tell layouts apart.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.pytorch_utils import Conv1D

from sparseft.models import find_prunable
from sparseft.models.layers import as_out_in, out_in_shape, param_layout
from sparseft.prune import (
    MaskEnforcer,
    apply_masks,
    load_masks,
    magnitude_prune,
    masks_from_zeros,
    oneshot,
    save_masks,
)
from sparseft.train import gmp_masks
from tiny_models import build_tiny_model


def _stored_out_in(module: Conv1D) -> np.ndarray:
    """The layer's weight as (out, in), transposed here by numpy, not by sparseft."""
    return module.weight.detach().numpy().T


def _calibration() -> list[dict]:
    g = torch.Generator().manual_seed(2)
    return [{"input_ids": torch.randint(3, 128, (2, 16), generator=g)} for _ in range(2)]


def _loss(model) -> torch.Tensor:
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    return model(input_ids=ids, labels=ids).loss


def test_the_tiny_gpt2_has_conv1d_layers_of_both_shapes():
    layers = find_prunable(build_tiny_model("gpt2"))
    assert all(isinstance(m, Conv1D) for m in layers.values())
    shapes = {out_in_shape(m) for m in layers.values()}
    assert (192, 64) in shapes and (64, 64) in shapes and (64, 256) in shapes


@pytest.mark.parametrize("how", ["magnitude_prune", "oneshot-magnitude", "oneshot-sparsegpt"])
def test_masks_are_out_by_in_and_match_the_zeros(how):
    model = build_tiny_model("gpt2")
    if how == "magnitude_prune":
        masks = magnitude_prune(model, 0.5)
    else:
        masks = oneshot(model, _calibration(), method=how.split("-")[1], sparsity=0.5, progress=False).masks
    for name, module in find_prunable(model).items():
        W = _stored_out_in(module)
        assert masks[name].shape == W.shape, name
        assert np.array_equal(masks[name].numpy(), W != 0), name  # kept exactly where the weight is nonzero


def test_save_load_round_trip_keeps_the_layout(tmp_path):
    model = build_tiny_model("gpt2")
    masks = magnitude_prune(model, 0.6)
    save_masks(masks, tmp_path / "masks.safetensors")
    loaded = load_masks(tmp_path / "masks.safetensors")
    assert loaded.keys() == masks.keys()
    for name, module in find_prunable(model).items():
        assert loaded[name].shape == out_in_shape(module) and torch.equal(loaded[name], masks[name])
    assert all(torch.equal(m, masks[n]) for n, m in masks_from_zeros(model, masks).items())


def test_apply_masks_zeros_exactly_the_masked_weights_of_the_stored_parameter():
    model = build_tiny_model("gpt2")
    layers = find_prunable(model)
    g = torch.Generator().manual_seed(5)
    masks = {name: torch.rand(out_in_shape(m), generator=g) > 0.4 for name, m in layers.items()}
    before = {name: m.weight.detach().numpy().copy() for name, m in layers.items()}
    apply_masks(model, masks)
    for name, module in layers.items():
        keep_in_out = masks[name].numpy().T  # the parameter's own (in, out) layout, by numpy
        assert np.array_equal(module.weight.detach().numpy(), before[name] * keep_in_out), name


def test_enforcer_keeps_conv1d_weights_zero_through_optimizer_steps():
    model = build_tiny_model("gpt2").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):  # dense steps first: AdamW's momentum is nonzero on the weights about to be pruned
        optimizer.zero_grad()
        _loss(model).backward()
        optimizer.step()
    masks = magnitude_prune(model, 0.5)
    MaskEnforcer(model, masks).attach(optimizer)
    for step in range(4):
        optimizer.zero_grad()
        _loss(model).backward()
        for name, module in find_prunable(model).items():
            grad = module.weight.grad.numpy().T  # (out, in), by numpy
            assert (grad[~masks[name].numpy()] == 0).all() and (grad[masks[name].numpy()] != 0).any(), (step, name)
        optimizer.step()
        for name, module in find_prunable(model).items():
            assert (_stored_out_in(module)[~masks[name].numpy()] == 0).all(), (step, name)


def test_gmp_masks_are_out_by_in():
    model = build_tiny_model("gpt2")
    layers = find_prunable(model)
    for name, mask in gmp_masks(layers, 0.5).items():
        W = _stored_out_in(layers[name])
        assert mask.shape == W.shape
        kept, dropped = np.abs(W[mask.numpy()]), np.abs(W[~mask.numpy()])
        assert kept.min() >= dropped.max(), name  # the largest magnitudes of the right matrix were kept


def test_old_in_by_out_mask_files_are_read_with_a_transpose_when_the_shape_tells():
    model = build_tiny_model("gpt2")
    c_attn = model.transformer.h[0].attn.c_attn  # (out, in) = (192, 64): not square
    mask = torch.rand(192, 64, generator=torch.Generator().manual_seed(0)) > 0.5
    with pytest.warns(UserWarning, match=r"\(in, out\)"):
        assert torch.equal(as_out_in("c_attn", c_attn, mask.t().contiguous()), mask)
    assert as_out_in("c_attn", c_attn, mask) is mask
    assert torch.equal(param_layout(c_attn, mask), mask.t())
    with pytest.raises(ValueError, match="c_attn"):
        as_out_in("c_attn", c_attn, torch.ones(64, 64, dtype=torch.bool))
    with pytest.warns(UserWarning):
        apply_masks(model, {"transformer.h.0.attn.c_attn": mask.t().contiguous()})
    assert np.array_equal(_stored_out_in(c_attn) != 0, mask.numpy())
