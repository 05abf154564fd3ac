"""OWL non-uniform sparsity: the pure allocation, the outlier statistics against a plain dense forward,
and the driver (in memory and streamed) pruning each block to its allotted sparsity."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from sparseft.errors import ConfigError
from sparseft.models import find_blocks, find_prunable, weight_matrix
from sparseft.prune.allocation import Allocation, block_outlier_ratios, owl_sparsities
from sparseft.prune.driver import oneshot
from sparseft.prune.residency import InMemory
from sparseft.prune.streaming import load_for_oneshot, oneshot_to_folder
from tiny_models import build_tiny_model, tiny_batches


@settings(max_examples=40, deadline=None)
@given(ratios=st.lists(st.floats(0.0, 0.2), min_size=2, max_size=8), sparsity=st.floats(0.3, 0.8),
       lam=st.floats(0.0, 0.1), data=st.data())
def test_owl_keeps_the_mean_and_the_bound(ratios, sparsity, lam, data):
    sizes = data.draw(st.lists(st.integers(1, 100), min_size=len(ratios), max_size=len(ratios)))
    names = [f"b{i}" for i in range(len(ratios))]
    got = owl_sparsities(dict(zip(names, ratios, strict=True)), dict(zip(names, sizes, strict=True)), sparsity, lam)
    weighted = sum(got[n] * s for n, s in zip(names, sizes, strict=True)) / sum(sizes)
    assert weighted == pytest.approx(sparsity, abs=1e-5)
    assert all(abs(got[n] - sparsity) <= 2 * lam + 1e-6 for n in names)
    # more outliers never means more pruning
    order = sorted(range(len(ratios)), key=lambda i: ratios[i])
    assert all(got[names[a]] >= got[names[b]] - 1e-6 for a, b in zip(order, order[1:], strict=False))


def test_owl_on_a_hand_example():
    # spread 0.04 -> scaled 0, 0.08, 0.16; mean 0.08; keep 0.3 -0.08/0/+0.08
    got = owl_sparsities({"a": 0.01, "b": 0.03, "c": 0.05}, {"a": 1, "b": 1, "c": 1}, 0.7, 0.08)
    assert got == pytest.approx({"a": 0.78, "b": 0.7, "c": 0.62})
    assert owl_sparsities({"a": 0.02, "b": 0.02}, {"a": 3, "b": 5}, 0.6, 0.08) == {"a": 0.6, "b": 0.6}


def _reference_ratios(model, batches, threshold):
    """A plain dense forward of the whole model with hooks on every prunable layer, then the LOD per block."""
    layers = find_prunable(model)
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: inputs[n].append(a[0].detach().reshape(-1, a[0].shape[-1])))
               for n, m in layers.items()]
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for h in handles:
        h.remove()
    ratios = {}
    for block in find_blocks(model):
        scores = []
        for name, module in layers.items():
            if name.startswith(block.name + "."):
                x = torch.cat(inputs[name]).double()
                norms = x.pow(2).mean(0).sqrt()
                scores.append((weight_matrix(module).double().abs() * norms).flatten())
        s = torch.cat(scores)
        ratios[block.name] = float((s > threshold * s.mean()).double().mean())
    return ratios


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_outlier_ratios_match_a_plain_dense_forward(family):
    model = build_tiny_model(family, seed=3)
    batches = tiny_batches(model, n_batches=3)
    layers = find_prunable(model)
    blocks = find_blocks(model)
    by_block = {b.name: {n: m for n, m in layers.items() if n.startswith(b.name + ".")} for b in blocks}
    before = {n: weight_matrix(m).clone() for n, m in layers.items()}
    got = block_outlier_ratios(model, batches, blocks, by_block, InMemory(), threshold=2.0)
    expected = _reference_ratios(model, batches, threshold=2.0)
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, abs=1e-6)
    assert max(got.values()) > 0  # the threshold is low enough that the comparison means something
    assert all(torch.equal(before[n], weight_matrix(m)) for n, m in layers.items())  # read, never changed


def test_oneshot_prunes_each_block_to_its_share():
    model = build_tiny_model("llama", seed=4, num_hidden_layers=4)
    batches = tiny_batches(model, n_batches=2)
    report = oneshot(model, batches, sparsity=0.6, allocation=Allocation("owl", lam=0.05, threshold=2.0),
                     progress=False)
    assert len(set(report.block_sparsity.values())) > 1  # not uniform
    for layer in report.layers:
        block = next(b for b in report.block_sparsity if layer.name.startswith(b + "."))
        assert layer.sparsity == pytest.approx(report.block_sparsity[block], abs=0.02)
    assert report.total_sparsity == pytest.approx(0.6, abs=0.01)
    assert set(report.as_dict()["outlier_ratios"]) == set(report.block_sparsity)


def test_streamed_owl_equals_in_memory(tmp_path):
    source = tmp_path / "dense"
    build_tiny_model("llama", seed=5).save_pretrained(source)
    kwargs = {"sparsity": 0.5, "allocation": Allocation("owl", threshold=2.0), "progress": False}
    records = {}
    weights = {}
    for mode in ("off", "on"):
        model, stream = load_for_oneshot(source, low_memory=mode)
        assert (stream is not None) == (mode == "on")
        batches = tiny_batches(model, n_batches=2)
        oneshot_to_folder(model, tmp_path / mode, batches, stream=stream, record=lambda r: r.as_dict(), **kwargs)
        records[mode] = json.loads((tmp_path / mode / "stage.json").read_text())
        weights[mode] = load_file(tmp_path / mode / "model.safetensors")
    assert records["on"]["block_sparsity"] == records["off"]["block_sparsity"]
    assert weights["on"].keys() == weights["off"].keys()
    assert all(torch.equal(weights["on"][k], weights["off"][k]) for k in weights["on"])


@pytest.mark.parametrize("kwargs", [{"method": "magnitude"}, {"nm": "2:4"}])
def test_owl_needs_a_data_method_with_a_sparsity(kwargs):
    model = build_tiny_model("llama", seed=6)
    with pytest.raises(ConfigError, match="owl"):
        oneshot(model, tiny_batches(model), allocation=Allocation("owl"), progress=False, **kwargs)


def test_allocation_settings_are_checked():
    with pytest.raises(ConfigError, match="allocation"):
        Allocation("global")
    with pytest.raises(ConfigError, match="lam"):
        Allocation("owl", lam=0.7)
