"""Magnitude pruning reaches exact sparsities, N:M structure, overrides and clear errors."""

import pytest
import torch

from sparseft.errors import ConfigError, ModelError
from sparseft.models import find_prunable, weight_matrix
from sparseft.prune import global_magnitude_masks, magnitude_mask, magnitude_prune, nm_mask, sparsity_report
from tiny_models import TINY_FAMILIES, build_tiny_model


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("sparsity", [0.0, 0.37, 0.5, 0.9])
def test_uniform_hits_exact_sparsity_per_layer(family, sparsity):
    model = build_tiny_model(family)
    masks = magnitude_prune(model, sparsity)
    report = sparsity_report(model, masks)
    for layer in report.layers:
        assert layer.zeros == round(sparsity * layer.total), layer.name


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5", "whisper"])
def test_global_hits_exact_total_and_varies_per_layer(family):
    model = build_tiny_model(family)
    with torch.no_grad():  # give layers different scales so one global threshold must differ per layer
        for i, module in enumerate(find_prunable(model).values()):
            module.weight.mul_(1 + i)
    masks = magnitude_prune(model, 0.6, scheme="global")
    report = sparsity_report(model, masks)
    assert report.zeros == round(0.6 * report.total)
    per_layer = [layer.sparsity for layer in report.layers]
    assert max(per_layer) - min(per_layer) > 0.2


def test_global_threshold_matches_sorting_all_weights():
    torch.manual_seed(0)
    weights = {"a": torch.randn(8, 16), "b": 3 * torch.randn(4, 32)}
    masks = global_magnitude_masks(weights, 0.5)
    everything = torch.cat([w.abs().flatten() for w in weights.values()])
    threshold = everything.sort().values[everything.numel() // 2 - 1]
    for name, w in weights.items():
        assert torch.equal(masks[name], w.abs() > threshold)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 8)])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_nm_every_group_keeps_exactly_n(family, n, m):
    model = build_tiny_model(family)
    masks = magnitude_prune(model, 0.0, nm=f"{n}:{m}")
    for name, module in find_prunable(model).items():
        w = weight_matrix(module)
        groups = (w != 0).reshape(w.shape[0], -1, m).sum(-1)
        assert torch.all(groups == n), name
        assert masks[name].shape == w.shape  # (out, in), also for Conv1D


def test_nm_keeps_largest_in_group():
    W = torch.tensor([[0.1, -5.0, 0.3, 2.0, 9.0, -0.2, 0.0, 1.0]])
    assert nm_mask(W, 2, 4).tolist() == [[False, True, False, True, True, False, False, True]]


def test_uniform_keeps_the_largest_weights():
    torch.manual_seed(1)
    W = torch.randn(16, 32)
    mask = magnitude_mask(W, 0.75)
    assert W[mask].abs().min() >= W[~mask].abs().max()


def test_overrides_by_regex():
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5, overrides={r"mlp\.down_proj": 0.8, r"\.k_proj": 0.0})
    report = {layer.name: layer.sparsity for layer in sparsity_report(model, masks).layers}
    assert report["model.layers.0.mlp.down_proj"] == pytest.approx(0.8, abs=1e-3)
    assert report["model.layers.1.self_attn.k_proj"] == 0.0
    assert report["model.layers.1.mlp.up_proj"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "half"])
def test_bad_sparsity_is_rejected(bad):
    model = build_tiny_model("llama")
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        magnitude_prune(model, bad)


def test_nm_that_does_not_divide_input_is_rejected():
    with pytest.raises(ConfigError, match="multiple of 8"):
        nm_mask(torch.randn(4, 12), 4, 8)
    with pytest.raises(ConfigError, match="0 < N < M"):
        magnitude_prune(build_tiny_model("llama"), 0.0, nm="4:4")
    with pytest.raises(ConfigError, match="2:4"):
        magnitude_prune(build_tiny_model("llama"), 0.0, nm="2-4")


def test_model_without_prunable_layer_is_rejected():
    with pytest.raises(ModelError, match="no prunable layer"):
        magnitude_prune(torch.nn.Sequential(torch.nn.LayerNorm(4)), 0.5)
    with pytest.raises(ModelError, match="no prunable layer"):
        magnitude_prune(build_tiny_model("llama"), 0.5, targets=["nothing_matches_this"])
