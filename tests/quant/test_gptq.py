"""GPTQ with a mask: same grid and zeros as round-to-nearest, lower output error on correlated inputs."""

import pytest
import torch

from sparseft.errors import ConfigError
from sparseft.quant import fake_quantize_weight, quantize_weight
from sparseft.quant.gptq import gptq_quantize, output_error


def _problem(seed: int, out: int = 24, cols: int = 80, tokens: int = 600):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, cols, generator=g) @ torch.randn(cols, cols, generator=g)  # correlated
    H = 2 * X.T @ X / tokens
    W = torch.randn(out, cols, generator=g)
    mask = torch.rand(out, cols, generator=g) > 0.5
    return W, H, mask, X


@pytest.mark.parametrize("seed,masked,gain", [(0, True, 0.95), (1, True, 0.95), (2, False, 0.7)])
def test_keeps_mask_and_grid_and_beats_round_to_nearest(seed, masked, gain):
    W, H, mask, X = _problem(seed)
    mask = mask if masked else torch.ones_like(mask)
    res = gptq_quantize(W, H, mask=mask, blocksize=32)
    assert res.q.dtype == torch.int8 and bool((res.q[~mask] == 0).all()) and int(res.q.abs().max()) <= 127
    torch.testing.assert_close(res.weight, res.q.float() * res.scale)
    rtn = fake_quantize_weight(W * mask)
    # independent measurement of the error on the inputs themselves
    direct = float(((X @ (W * mask - res.weight).T) ** 2).sum(1).mean())
    assert res.error == pytest.approx(direct, rel=1e-3)
    # a fixed mask throws away the updates that land on pruned weights: smaller gain than dense GPTQ
    assert res.error < gain * output_error(W * mask, rtn, H)


def test_identity_hessian_is_round_to_nearest():
    W, _, mask, _ = _problem(3)
    res = gptq_quantize(W, 2 * torch.eye(W.shape[1]), mask=mask, percdamp=0.0)
    assert torch.equal(res.q, quantize_weight(W, mask=mask).q)  # no correlations: nothing to compensate


def test_bad_shapes():
    with pytest.raises(ConfigError, match="H"):
        gptq_quantize(torch.ones(2, 3), torch.eye(4))


def test_quantize_model_runs_gptq_through_the_sequential_driver_and_beats_rounding_per_layer():
    """First-block layers see the same inputs in any order, so their H can be measured independently here."""
    from sparseft.models import find_blocks, find_prunable, weight_matrix
    from sparseft.prune import magnitude_prune, solve_sequentially
    from tiny_models import build_tiny_model

    batches = [{"input_ids": torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(s))} for s in range(2)]
    model = build_tiny_model("gpt2")
    masks = magnitude_prune(model, 0.5)
    layers = find_prunable(model)
    first = {n: m for n, m in layers.items() if n.startswith(find_blocks(model)[0].name + ".")}
    inputs = {n: [] for n in first}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs[n].append(a[0].reshape(-1, a[0].shape[-1])))
             for n, m in first.items()]
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in hooks:
        h.remove()
    dense = {n: weight_matrix(m).detach().clone() for n, m in first.items()}
    report = solve_sequentially(model, batches, "gptq", layers, masks=masks)
    assert [r.name for r in report.layers] == list(layers) and set(report.scales) == set(layers)
    for name, module in first.items():
        X = torch.cat(inputs[name]).double()
        H = 2 * X.T @ X / len(X)
        W = weight_matrix(module).detach()
        assert bool((W[~masks[name]] == 0).all())
        gptq_error = output_error(dense[name], W, H)
        assert gptq_error < output_error(dense[name], fake_quantize_weight(dense[name], mask=masks[name]), H), name
        assert report.layers[list(layers).index(name)].error == pytest.approx(gptq_error, rel=1e-3)
