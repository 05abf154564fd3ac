"""Wanda mask and norm accumulator against direct computations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseft.errors import ConfigError
from sparseft.prune.wanda import accumulate_norms, wanda_mask


def test_accumulate_norms_is_mean_of_squares():
    X = torch.randn(7, 33, 12)
    norm_sq = torch.zeros(12)
    n = 0
    for batch in X:
        n = accumulate_norms(norm_sq, n, batch)
    assert n == 7 * 33
    torch.testing.assert_close(norm_sq, (X.reshape(-1, 12) ** 2).mean(dim=0))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), columns=st.integers(1, 40), sparsity=st.floats(0.0, 0.99), seed=st.integers(0, 99))
def test_each_row_drops_its_lowest_scores(rows, columns, sparsity, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, columns, generator=g)
    norm_sq = torch.rand(columns, generator=g) * 10
    mask = wanda_mask(W, norm_sq, sparsity)
    k = int(sparsity * columns + 0.5)
    assert (~mask).sum(dim=1).tolist() == [k] * rows
    score = W.abs() * norm_sq.sqrt()
    for r in range(rows):  # the comparison group is the output row (Wanda paper, sec. 3)
        if 0 < k < columns:
            assert score[r][~mask[r]].max() <= score[r][mask[r]].min()


def test_comparison_group_is_per_output_row():
    W = torch.tensor([[100.0, 200.0, 300.0, 400.0], [1.0, 2.0, 3.0, 4.0]])
    mask = wanda_mask(W, torch.ones(4), 0.5)
    # A per-layer threshold would prune the whole small row; Wanda prunes half of each.
    assert mask.tolist() == [[False, False, True, True], [False, False, True, True]]


def test_input_norms_change_the_choice():
    W = torch.ones(2, 4)
    mask = wanda_mask(W, torch.tensor([4.0, 0.0, 1.0, 9.0]), 0.5)
    assert mask.tolist() == [[True, False, False, True]] * 2


@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8)])
def test_nm_keeps_top_n_of_each_group(nm):
    n, m = nm
    W = torch.randn(8, 32)
    norm_sq = torch.rand(32)
    mask = wanda_mask(W, norm_sq, 0.5, nm=nm)
    assert (mask.reshape(8, -1, m).sum(dim=2) == n).all()
    score = (W.abs() * norm_sq.sqrt()).reshape(8, -1, m)
    groups = mask.reshape(8, -1, m)
    kept_min = torch.where(groups, score, torch.inf).amin(dim=2)
    dropped_max = torch.where(~groups, score, -torch.inf).amax(dim=2)
    assert (dropped_max <= kept_min).all()


def test_rejects_bad_settings():
    with pytest.raises(ConfigError):
        wanda_mask(torch.ones(2, 4), torch.ones(4), -0.1)
    with pytest.raises(ConfigError):
        wanda_mask(torch.ones(2, 6), torch.ones(6), 0.5, nm=(2, 4))
