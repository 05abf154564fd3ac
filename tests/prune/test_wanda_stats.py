"""What the driver collects per method: Wanda's masks from input norms alone, errors from a sampled H.

The references are independent: layer inputs recorded with hooks on full forwards of the model (not
the driver's replay of captured block calls), accumulated in float64.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from sparseft.models import find_blocks, find_prunable, weight_matrix
from sparseft.prune.driver import oneshot
from sparseft.prune.stats import InputStats
from sparseft.prune.wanda import wanda_mask
from tiny_models import build_tiny_model


def calibration(n_batches: int = 4, batch: int = 2, seq: int = 24) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    return [{"input_ids": torch.randint(3, 128, (batch, seq), generator=g)} for _ in range(n_batches)]


def layer_inputs(model, names, batches) -> dict[str, torch.Tensor]:
    """Every calibration input (tokens, in_features) of the named layers, in float64, from full forwards."""
    modules = dict(model.named_modules())
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [modules[n].register_forward_hook(lambda m, a, o, n=n: seen[n].append(a[0].detach()))
             for n in names]
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in hooks:
        h.remove()
    return {n: torch.cat([x.reshape(-1, x.shape[-1]) for x in xs]).double() for n, xs in seen.items()}


@pytest.mark.parametrize("nm", [None, (2, 4)], ids=["50%", "2:4"])
def test_wanda_masks_are_exact_for_independently_measured_norms(nm):
    """Block i's layers are ranked on their inputs with blocks < i pruned and block i still dense."""
    dense = build_tiny_model("llama")
    batches = calibration()
    pruned = copy.deepcopy(dense)
    report = oneshot(pruned, batches, method="wanda", sparsity=0.5, nm=nm, progress=False)
    for block in find_blocks(pruned):
        probe = copy.deepcopy(pruned)
        probe.get_submodule(block.name).load_state_dict(dense.get_submodule(block.name).state_dict())
        names = [n for n in find_prunable(probe) if n.startswith(block.name + ".")]
        inputs = layer_inputs(probe, names, batches)
        for name in names:
            W = weight_matrix(probe.get_submodule(name)).detach().double()
            score = W.abs() * inputs[name].pow(2).sum(0).sqrt()  # |w| * ||x||, the reference's scale
            keep = report.masks[name]
            groups = (W.shape[0], -1, nm[1]) if nm else (W.shape[0], 1, -1)
            kept_min = score.masked_fill(~keep, math.inf).reshape(groups).amin(-1)
            dropped_max = score.masked_fill(keep, -math.inf).reshape(groups).amax(-1)
            # Every kept weight outscores every dropped one of its row (group); 1e-9: float32 vs float64 ties.
            assert (kept_min >= dropped_max * (1 - 1e-9)).all(), name
            # And the very mask Wanda picks from these float64 norms (no near-tie flipped).
            assert torch.equal(keep, wanda_mask(W, inputs[name].pow(2).sum(0), 0.5, nm)), name


def test_collector_keeps_h_only_where_asked():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    xs = [torch.randn(2, 5, 6) for _ in range(3)]
    for hessian_batches, h_tokens in [(None, 30), (1, 10), (0, 0)]:
        stats = InputStats({"l": layer}, hessian_batches, norms=True)
        for x in xs:
            layer(x)
            stats.end_batch()
        X = torch.cat([x.reshape(-1, 6) for x in xs]).double()
        torch.testing.assert_close(stats.norms("l").double(), X.pow(2).mean(0))
        assert stats.tokens["l"] == 30 and stats.hessian_tokens("l") == h_tokens
        if h_tokens:
            Xh = X[:h_tokens]
            # H is accumulated in float32 (a running mean): compare at float32's tolerance, not float64's.
            torch.testing.assert_close(stats.hessian("l"), (2 / h_tokens * Xh.T @ Xh).float())
        else:
            assert stats.hessian("l") is None
        stats.remove()


@pytest.mark.parametrize("error_batches", [None, 1])
def test_wanda_errors_match_outputs_on_the_tokens_they_name(error_batches):
    """error = mean over the reported tokens of ||(W - W') x||^2, on the dense first block's inputs."""
    dense = build_tiny_model("llama")
    batches = calibration()
    pruned = copy.deepcopy(dense)
    report = oneshot(pruned, batches, method="wanda", sparsity=0.5, progress=False, error_batches=error_batches)
    first = find_blocks(dense)[0].name + "."
    rows = [r for r in report.layers if r.name.startswith(first)]
    inputs = layer_inputs(dense, [r.name for r in rows], batches)
    for r in rows:
        X = inputs[r.name][: r.error_tokens]
        assert r.error_tokens == (X.shape[0] if error_batches is None else 2 * 24)
        W0 = weight_matrix(dense.get_submodule(r.name)).detach().double()
        W1 = weight_matrix(pruned.get_submodule(r.name)).detach().double()
        expected = float(((X @ (W0 - W1).T) ** 2).sum(1).mean())
        assert r.error == pytest.approx(expected, rel=1e-4)
        assert r.rel_error == pytest.approx(expected / float(((X @ W0.T) ** 2).sum(1).mean()), rel=1e-4)


def test_no_error_batches_gives_nan_errors_and_magnitude_uses_no_more_data():
    model = build_tiny_model("llama")
    report = oneshot(model, calibration(), method="wanda", sparsity=0.5, progress=False, error_batches=0)
    assert all(math.isnan(r.error) and r.error_tokens == 0 for r in report.layers)
    report = oneshot(build_tiny_model("llama"), calibration(), method="magnitude", sparsity=0.5, progress=False)
    assert report.tokens == 2 * 24 and all(r.error_tokens == 2 * 24 for r in report.layers)
    assert "errors measured on the first" not in report.format()
