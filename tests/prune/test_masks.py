"""Masks keep pruned weights exactly zero through training, and survive a save/load round trip."""

import pytest
import torch

from sparseft.errors import CheckpointError
from sparseft.models import weight_matrix
from sparseft.prune import (
    MaskEnforcer,
    load_masks,
    magnitude_prune,
    masks_from_zeros,
    save_masks,
    sparsity_report,
)
from tiny_models import TINY_FAMILIES, build_tiny_model


def _loss(family, model):
    torch.manual_seed(0)
    if family == "whisper":
        feats = torch.randn(2, model.config.num_mel_bins, 2 * model.config.max_source_positions)
        return model(input_features=feats, labels=torch.randint(3, 128, (2, 5))).loss
    ids = torch.randint(3, 128, (2, 12))
    if family == "t5":
        return model(input_ids=ids, labels=ids, decoder_input_ids=ids).loss
    return model(input_ids=ids, labels=ids).loss


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_masked_weights_stay_zero_after_20_adamw_steps(family):
    model = build_tiny_model(family).train()
    masks = magnitude_prune(model, 0.5)
    before = {name: module.weight.detach().clone() for name, module in model.named_modules() if name in masks}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    MaskEnforcer(model, masks).attach(optimizer)
    for _ in range(20):
        optimizer.zero_grad()
        _loss(family, model).backward()
        optimizer.step()
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = weight_matrix(modules[name])  # masks are (out, in), also for GPT-2's Conv1D
        assert torch.all(weight[~mask] == 0), name
        assert not torch.equal(modules[name].weight, before[name]), f"{name} did not train"
    assert sparsity_report(model, masks).sparsity == pytest.approx(0.5, abs=1e-3)


def test_gradients_of_pruned_weights_are_zero():
    model = build_tiny_model("llama").train()
    masks = magnitude_prune(model, 0.5)
    MaskEnforcer(model, masks)
    _loss("llama", model).backward()
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        assert torch.all(modules[name].weight.grad[~mask] == 0)
        assert modules[name].weight.grad[mask].abs().sum() > 0


def test_save_load_round_trip(tmp_path):
    model = build_tiny_model("gpt2")
    masks = magnitude_prune(model, 0.7)
    save_masks(masks, tmp_path / "masks.safetensors")
    loaded = load_masks(tmp_path / "masks.safetensors")
    assert loaded.keys() == masks.keys()
    assert all(torch.equal(loaded[k], masks[k]) for k in masks)
    assert all(torch.equal(v, masks[k]) for k, v in masks_from_zeros(model, masks).items())
    assert [p.name for p in tmp_path.iterdir()] == ["masks.safetensors"]  # no temp file left behind


def test_damaged_mask_file_is_reported(tmp_path):
    path = tmp_path / "masks.safetensors"
    save_masks(magnitude_prune(build_tiny_model("llama"), 0.5), path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="damaged"):
        load_masks(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_masks(tmp_path / "missing.safetensors")


def test_report_format_lists_layers_and_total():
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    text = sparsity_report(model, masks).format()
    assert "model.layers.0.mlp.down_proj" in text and "50.00%" in text
    assert text.splitlines()[-1].startswith("total")


def _adamw_steps(model, optimizer, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        _loss("llama", model).backward()
        optimizer.step()


def _revived(model, masks) -> int:
    modules = dict(model.named_modules())
    return sum(int((weight_matrix(modules[n])[~m] != 0).sum()) for n, m in masks.items())


def test_post_step_reapply_stops_momentum_from_reviving_pruned_weights():
    """The gradient hook alone cannot hold zeros once AdamW has momentum from before pruning (GMP's case)."""
    runs = {}
    for attach in (True, False):
        model = build_tiny_model("llama").train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
        _adamw_steps(model, optimizer, 3)  # dense: exp_avg is nonzero everywhere
        masks = magnitude_prune(model, 0.5)
        enforcer = MaskEnforcer(model, masks)  # gradient hooks: new gradients of pruned weights are 0
        if attach:
            enforcer.attach(optimizer)
        _adamw_steps(model, optimizer, 2)
        runs[attach] = _revived(model, masks)
    assert runs[True] == 0
    assert runs[False] > 0  # the premise: without the post-step re-application the momentum revives them
