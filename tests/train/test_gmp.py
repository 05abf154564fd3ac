"""The cubic GMP schedule and the magnitude masks it produces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.train import GMPSchedule, gmp_masks


def test_schedule_hits_end_points_and_clamps():
    s = GMPSchedule(0.1, 0.7, start_step=10, end_step=110, frequency=10)
    assert s.sparsity_at(10) == pytest.approx(0.1)
    assert s.sparsity_at(110) == pytest.approx(0.7)
    assert s.sparsity_at(0) == pytest.approx(0.1) and s.sparsity_at(1000) == pytest.approx(0.7)


def test_schedule_is_the_cubic_formula():
    s_i, s_f, t0, n, dt = 0.0, 0.8, 5, 4, 25
    s = GMPSchedule(s_i, s_f, start_step=t0, end_step=t0 + n * dt, frequency=dt)
    for t in range(t0, t0 + n * dt + 1, 7):
        assert s.sparsity_at(t) == pytest.approx(s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3)


def test_targets_change_only_at_update_steps_and_never_decrease():
    s = GMPSchedule(0.0, 0.5, start_step=2, end_step=12, frequency=5)
    targets = [s.target_at(t) for t in range(0, 20)]
    assert targets[:2] == [None, None]
    assert targets[2] == 0.0 and targets[2:7] == [targets[2]] * 5
    assert targets[7] == pytest.approx(s.sparsity_at(7)) and targets[12] == pytest.approx(0.5)
    live = [t for t in targets if t is not None]
    assert live == sorted(live) and live[-1] == pytest.approx(0.5)


def test_schedule_rejects_bad_settings():
    with pytest.raises(ConfigError):
        GMPSchedule(0.6, 0.5, 0, 10)
    with pytest.raises(ConfigError):
        GMPSchedule(0.0, 1.0, 0, 10)
    with pytest.raises(ConfigError):
        GMPSchedule(0.0, 0.5, 10, 5)
    with pytest.raises(ConfigError):
        GMPSchedule(0.0, 0.5, 0, 10, frequency=0)
    with pytest.raises(ConfigError):
        GMPSchedule(0.0, 0.5, 0, 10, scheme="layerwise")


def test_uniform_and_global_masks():
    torch.manual_seed(0)
    small, big = nn.Linear(8, 4), nn.Linear(8, 4)
    with torch.no_grad():
        big.weight.mul_(100)  # global ranking should prune the small layer first
    layers = {"small": small, "big": big}
    uniform = gmp_masks(layers, 0.5, "uniform")
    assert all(int((~m).sum()) == 16 for m in uniform.values())
    glob = gmp_masks(layers, 0.5, "global")
    assert int((~glob["small"]).sum()) == 32 and int((~glob["big"]).sum()) == 0
    # already-zero weights stay pruned as sparsity grows
    with torch.no_grad():
        small.weight.mul_(uniform["small"])
    assert not (gmp_masks(layers, 0.75)["small"] & ~uniform["small"]).any()


def test_owl_scheme_scales_each_layer_by_its_share():
    torch.manual_seed(0)
    layers = {"a": nn.Linear(40, 10, bias=False), "b": nn.Linear(40, 10, bias=False)}
    masks = gmp_masks(layers, 0.5, scheme="owl", layer_share={"a": 1.2, "b": 0.8})
    assert float((~masks["a"]).float().mean()) == pytest.approx(0.6)
    assert float((~masks["b"]).float().mean()) == pytest.approx(0.4)
    # within each layer it is still magnitude pruning: every pruned weight is <= every kept one, row by row
    for name, layer in layers.items():
        w = layer.weight.abs()
        for row, keep in zip(w, masks[name], strict=True):
            assert row[~keep].max() <= row[keep].min()


def test_owl_scheme_needs_its_shares():
    with pytest.raises(ConfigError, match="layer_share"):
        GMPSchedule(0.0, 0.5, 0, 10, scheme="owl")
    with pytest.raises(ConfigError, match="layer_share"):
        gmp_masks({"a": nn.Linear(4, 4)}, 0.5, scheme="owl", layer_share={"b": 1.0})
