"""SparseGPT solver against independent computations on a random layer with known inputs."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseft.errors import ConfigError
from sparseft.prune.magnitude import magnitude_mask
from sparseft.prune.sparsegpt import SolverError, accumulate_hessian, sparsegpt_prune
from sparseft.prune.wanda import wanda_mask

OUT, IN, TOKENS = 48, 128, 2048


def correlated_inputs(seed: int = 0, columns: int = IN, tokens: int = TOKENS) -> torch.Tensor:
    """(tokens, columns) inputs like LLM activations: a decaying spectrum and features of very different scales."""
    g = torch.Generator().manual_seed(seed)
    decay = torch.exp(-torch.arange(columns) / 16.0).unsqueeze(1)
    mix = torch.randn(columns, columns, generator=g) / columns**0.5 * decay + 0.1 * torch.eye(columns)
    scale = torch.exp(torch.randn(columns, generator=g))  # a few large "outlier" features
    return (torch.randn(tokens, columns, generator=g) @ mix) * scale


def hessian_of(X: torch.Tensor, batch: int = 300) -> torch.Tensor:
    H = torch.zeros(X.shape[1], X.shape[1], dtype=X.dtype)
    n = 0
    for chunk in X.split(batch):  # uneven batches exercise the running mean
        n = accumulate_hessian(H, n, chunk.unsqueeze(0))
    return H


def output_sq_error(W: torch.Tensor, W_pruned: torch.Tensor, X: torch.Tensor) -> float:
    """||(W - W') X||^2 computed from the inputs themselves, not from H."""
    return float(((X.double() @ (W.double() - W_pruned.double()).T) ** 2).sum())


@pytest.fixture(scope="module")
def layer() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    X = correlated_inputs()
    W = torch.randn(OUT, IN, generator=torch.Generator().manual_seed(1))
    return W, X, hessian_of(X)


def test_accumulate_hessian_matches_definition(layer):
    _, X, H = layer
    expected = 2 / X.shape[0] * X.double().T @ X.double()
    torch.testing.assert_close(H.double(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("sparsity, nm", [(0.5, None), (0.5, (2, 4))])
def test_error_below_wanda_and_magnitude(layer, sparsity, nm):
    W, X, H = layer
    res = sparsegpt_prune(W, H, sparsity, nm=nm)
    norm_sq = (X * X).mean(dim=0)
    err_sgpt = output_sq_error(W, res.weight, X)
    err_wanda = output_sq_error(W, W * wanda_mask(W, norm_sq, sparsity, nm=nm), X)
    err_mag = output_sq_error(W, W * magnitude_mask(W, sparsity, nm), X)
    assert err_sgpt < 0.8 * err_wanda, (err_sgpt, err_wanda)
    assert err_wanda < err_mag, (err_wanda, err_mag)
    # The reported error is the same quantity per token.
    assert res.error == pytest.approx(err_sgpt / X.shape[0], rel=1e-3)


def test_sparsity_zero_returns_w_unchanged(layer):
    W, _, H = layer
    res = sparsegpt_prune(W, H, 0.0)
    assert torch.equal(res.weight, W)
    assert res.mask.all() and res.error == 0.0


@settings(max_examples=15, deadline=None)
@given(
    columns=st.integers(4, 70),
    sparsity=st.floats(0.0, 0.95),
    blocksize=st.sampled_from([4, 16, 128]),
)
def test_exact_sparsity_per_row(columns, sparsity, blocksize):
    X = correlated_inputs(seed=columns, columns=columns, tokens=4 * columns)
    W = torch.randn(6, columns)
    res = sparsegpt_prune(W, hessian_of(X), sparsity, blocksize=blocksize)
    expected = int(sparsity * columns + 0.5)
    assert (~res.mask).sum(dim=1).tolist() == [expected] * 6
    assert (res.weight[~res.mask] == 0).all()
    assert torch.isfinite(res.weight).all()


@pytest.mark.parametrize("nm, blocksize", [((2, 4), 128), ((1, 4), 16), ((4, 8), 12)])
def test_nm_structure(layer, nm, blocksize):
    W, _, H = layer
    n, m = nm
    res = sparsegpt_prune(W, H, 0.0, nm=nm, blocksize=blocksize)
    kept_per_group = res.mask.reshape(OUT, IN // m, m).sum(dim=2)
    assert (kept_per_group == n).all()
    assert (res.weight[~res.mask] == 0).all()
    assert (res.weight.reshape(OUT, IN // m, m) != 0).sum(dim=2).le(n).all()


def obs_reference(W, H, percdamp, choose):
    """Sequential OBS (paper eq. 3) in float64 with explicit inverse downdates, one column at a time.

    At column q, with F the columns not yet processed and Hinv = (H_FF)^-1: every row that prunes q
    moves its remaining weights by delta = -w_q / Hinv_qq * Hinv[:, q]; then q leaves F:
    Hinv <- Hinv - Hinv[:, q] Hinv[q, :] / Hinv_qq. `choose(q, W, saliency_denominator)` returns
    the keep-mask columns it decides at step q (dict col -> bool row tensor).
    """
    W = W.double().clone()
    H = H.double() + percdamp * torch.diag(H.double()).mean() * torch.eye(H.shape[0], dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    cols = W.shape[1]
    # [H_F^-1]_jj with F = {j, ..., cols-1}: the OBS saliency denominator of column j when its turn comes.
    denom = torch.stack([torch.linalg.inv(H[j:, j:])[0, 0] for j in range(cols)])
    keep: dict[int, torch.Tensor] = {}
    for q in range(cols):
        keep.update(choose(q, W, denom))
        Fq = Hinv[:, 0]  # Hinv is indexed over F = {q, ..., cols-1}; column q is its first
        prune_rows = ~keep[q]
        delta = -(W[:, q] / Fq[0]).unsqueeze(1) * Fq.unsqueeze(0)
        W[:, q:] += delta * prune_rows.unsqueeze(1)
        W[prune_rows, q] = 0.0  # exact zero (the update above makes it zero up to rounding)
        Hinv = (Hinv - torch.outer(Fq, Fq) / Fq[0])[1:, 1:]
    mask = torch.stack([keep[q] for q in range(cols)], dim=1)
    return W, mask


def per_block_chooser(sparsity, blocksize):
    """Unstructured: at each block start, every row drops its smallest w^2 / [H_F^-1]_jj in the block."""

    def choose(q, W, denom):
        if q % blocksize:
            return {}
        stop = min(q + blocksize, W.shape[1])
        k = int(sparsity * stop + 0.5) - int(sparsity * q + 0.5)
        score = W[:, q:stop] ** 2 / denom[q:stop]
        ranks = score.argsort(dim=1).argsort(dim=1)
        return {q + j: ranks[:, j] >= k for j in range(stop - q)}

    return choose


def nm_chooser(n, m):
    def choose(q, W, denom):
        if q % m:
            return {}
        score = W[:, q : q + m] ** 2 / denom[q : q + m]
        ranks = score.argsort(dim=1, descending=True).argsort(dim=1)
        return {q + j: ranks[:, j] < n for j in range(m)}

    return choose


@pytest.mark.parametrize(
    "blocksize, nm", [(16, None), (6, None), (16, (2, 4))], ids=["one-block", "lazy-blocks", "2:4"]
)
def test_obs_update_matches_float64_rederivation(blocksize, nm):
    cols = 16
    X = correlated_inputs(seed=3, columns=cols, tokens=200).double()
    H = 2 / X.shape[0] * X.T @ X
    W = torch.randn(5, cols, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    chooser = per_block_chooser(0.5, blocksize) if nm is None else nm_chooser(*nm)
    W_ref, mask_ref = obs_reference(W, H, 0.01, chooser)
    res = sparsegpt_prune(W, H, 0.5, nm=nm, blocksize=blocksize, percdamp=0.01, dtype=torch.float64)
    assert torch.equal(res.mask, mask_ref)
    torch.testing.assert_close(res.weight, W_ref, rtol=1e-9, atol=1e-9)


def test_dead_inputs_are_zeroed_without_nan(layer):
    W, X, _ = layer
    X = X.clone()
    X[:, :5] = 0
    res = sparsegpt_prune(W, hessian_of(X), 0.5)
    assert torch.isfinite(res.weight).all()
    assert (res.weight[:, :5] == 0).all()


def test_cholesky_failure_raises_dampening_and_logs(caplog):
    H = torch.tensor([[1.0, 2.0], [2.0, 1.0]])  # indefinite: eigenvalues 3 and -1
    with caplog.at_level(logging.WARNING, logger="sparseft.prune.sparsegpt"):
        res = sparsegpt_prune(torch.ones(3, 2), H, 0.5)
    assert "Cholesky" in caplog.text
    assert torch.isfinite(res.weight).all()


def test_hopeless_hessian_raises_clear_error():
    with pytest.raises(SolverError, match="not positive definite"):
        sparsegpt_prune(torch.ones(3, 4), -torch.eye(4), 0.5)
    with pytest.raises(SolverError, match="NaN"):
        sparsegpt_prune(torch.ones(3, 4), torch.full((4, 4), float("nan")), 0.5)


def test_bad_settings_are_config_errors(layer):
    W, _, H = layer
    with pytest.raises(ConfigError):
        sparsegpt_prune(W, H, 1.0)
    with pytest.raises(ConfigError):
        sparsegpt_prune(W[:, :6], H[:6, :6], 0.5, nm=(2, 4))
