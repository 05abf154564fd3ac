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
