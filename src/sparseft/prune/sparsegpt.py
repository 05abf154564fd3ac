"""SparseGPT (Frantar & Alistarh, 2023): prune one layer and fix the damage with OBS updates.

A pure function on tensors; the model walking, hooks and calibration live in `sparseft.prune.driver`.
Variable names follow the paper and its reference code: `W` (out, in), `H` (in, in) = 2/n * sum x x^T,
`Hinv` the upper Cholesky factor of H^-1, `mask` (True = keep), `Err` the scaled errors of a block.

    >>> import torch
    >>> X = torch.randn(64, 1000)                 # (in_features, tokens)
    >>> W = torch.randn(32, 64)
    >>> H = torch.zeros(64, 64); n = accumulate_hessian(H, 0, X.T)
    >>> res = sparsegpt_prune(W, H, 0.5)          # or nm=(2, 4): 2 kept in every 4 inputs
    >>> float((res.weight == 0).float().mean())
    0.5
    >>> res.error < output_error(W, W * res.mask, H)  # the OBS updates beat zeroing the same weights
    True
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sparseft.errors import ConfigError, SparseftError
from sparseft.prune.magnitude import parse_nm, validate_sparsity

logger = logging.getLogger(__name__)

#: Dampening grows tenfold per failed Cholesky; after this many tries the solver gives up.
MAX_DAMP_TRIES = 6


class SolverError(SparseftError):
    """The layer's Hessian cannot be factored even with strong dampening (e.g. NaN activations)."""


@dataclass(frozen=True)
class SparseGPTResult:
    """Pruned weight (input dtype), keep-mask (bool, True = kept) and output error.

    `error` is the mean over calibration tokens of ||(W - W') x||^2, i.e. tr(dW H dW^T) / 2 with the
    undamped H; it is comparable across methods pruning the same layer on the same inputs.
    """

    weight: Tensor
    mask: Tensor
    error: float


def accumulate_hessian(H: Tensor, nsamples: int, x: Tensor) -> int:
    """Add inputs `x` (..., in_features) into H = 2/n * sum x x^T in place; return the new token count.

    Running mean, so H stays well scaled however many batches arrive (the reference code does the same).

        >>> H = torch.zeros(8, 8); n = 0
        >>> for batch in torch.randn(3, 2, 5, 8): n = accumulate_hessian(H, n, batch)
        >>> n
        30
    """
    x = x.reshape(-1, x.shape[-1]).to(H.dtype)
    tokens = x.shape[0]
    if tokens == 0:
        return nsamples
    H.mul_(nsamples / (nsamples + tokens))
    nsamples += tokens
    x = x * math.sqrt(2 / nsamples)
    H.addmm_(x.T, x)
    return nsamples


def output_error(W: Tensor, W_pruned: Tensor, H: Tensor) -> float:
    """Mean over calibration tokens of ||(W - W') x||^2, from H = 2/n * sum x x^T."""
    dW = (W.to(H.dtype) - W_pruned.to(H.dtype))
    return float(0.5 * ((dW @ H) * dW).sum())


def pruned_in_span(sparsity: float, start: int, stop: int) -> int:
    """How many of columns [start, stop) a row prunes so that every prefix holds round(sparsity * cols).

    Cumulative rounding makes the per-block counts add up to exactly round(sparsity * columns) per row.
    """
    return _round_half_up(sparsity * stop) - _round_half_up(sparsity * start)


def check_settings(sparsity: float, nm: tuple[int, int] | None, columns: int) -> None:
    """Raise ConfigError unless 0 <= sparsity < 1 and N:M fits `columns` (N kept of every M inputs)."""
    validate_sparsity(sparsity)
    if parse_nm(nm) is not None and columns % nm[1]:
        raise ConfigError(f"N:M {nm[0]}:{nm[1]} needs in_features divisible by {nm[1]}, got {columns}")


def sparsegpt_prune(
    W: Tensor,
    H: Tensor,
    sparsity: float,
    *,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> SparseGPTResult:
    """Prune `W` (out, in) given the Hessian `H` (in, in) of its inputs; neither input is modified.

    Unstructured: each row prunes round(sparsity * cols) weights, spread over column blocks of
    `blocksize` (uniform sparsity per row block); inside a block a row drops its weights with the
    smallest w^2 / [H^-1]_jj^2. N:M (`nm=(2, 4)`: keep 2 of every 4 consecutive inputs) overrides
    `sparsity`. `dtype=torch.float64` runs the whole solve in double precision (tests).
    """
    columns = W.shape[1]
    check_settings(sparsity, nm, columns)
    if H.shape != (columns, columns):
        raise ConfigError(f"H must be ({columns}, {columns}) for W of shape {tuple(W.shape)}, got {tuple(H.shape)}")
    if nm is None and sparsity == 0.0:
        return SparseGPTResult(W.clone(), torch.ones_like(W, dtype=torch.bool), 0.0)
    if nm is not None and blocksize % nm[1]:
        blocksize = max(nm[1], blocksize - blocksize % nm[1])  # an N:M group must not straddle two blocks
    if not torch.isfinite(H).all():
        raise SolverError("the Hessian holds NaN or inf: the calibration activations overflowed")

    orig_dtype = W.dtype
    H0 = H.to(dtype)
    W0 = W.to(dtype)
    W = W0.clone()
    H = H0.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1  # an input that is always 0 carries no information; its weights are free to drop
    W[:, dead] = 0
    Hinv = _inverse_hessian_cholesky(H, percdamp)
    mask = torch.ones_like(W, dtype=torch.bool)

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        _prune_block(W, Hinv, mask, i1, i2, sparsity, nm)

    return SparseGPTResult(W.to(orig_dtype), mask, output_error(W0, W, H0))


def _prune_block(
    W: Tensor, Hinv: Tensor, mask: Tensor, i1: int, i2: int, sparsity: float, nm: tuple[int, int] | None
) -> None:
    """Prune columns [i1, i2) of W in place with OBS updates, then lazily update columns i2: (paper Alg. 1)."""
    count = i2 - i1
    W1 = W[:, i1:i2].clone()
    Q1 = torch.zeros_like(W1)
    Err1 = torch.zeros_like(W1)
    Hinv1 = Hinv[i1:i2, i1:i2]
    d = torch.diag(Hinv1)
    mask1 = torch.ones_like(W1, dtype=torch.bool)
    if nm is None:
        # Scores use the weights as updated by the previous blocks, as in the reference code.
        _drop_smallest(mask1, W1**2 / d.unsqueeze(0) ** 2, pruned_in_span(sparsity, i1, i2))

    for i in range(count):
        if nm is not None and i % nm[1] == 0:
            # N:M chooses each group just before pruning it, so earlier OBS updates inform the choice.
            group = slice(i, i + nm[1])
            _drop_smallest(mask1[:, group], W1[:, group] ** 2 / d[group].unsqueeze(0) ** 2, nm[1] - nm[0])
        w = W1[:, i]
        q = w * mask1[:, i]
        Q1[:, i] = q
        err1 = (w - q) / Hinv1[i, i]
        W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
        Err1[:, i] = err1

    W[:, i1:i2] = Q1
    mask[:, i1:i2] = mask1
    W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]


def _drop_smallest(mask: Tensor, score: Tensor, k: int) -> None:
    """Set to False, in each row of `mask`, the `k` entries with the smallest `score`."""
    if k > 0:
        idx = torch.topk(score, k, dim=1, largest=False).indices
        mask.scatter_(1, idx, False)


def _inverse_hessian_cholesky(H: Tensor, percdamp: float) -> Tensor:
    """Upper Cholesky factor of (H + damp I)^-1, damp = percdamp * mean(diag H), raised tenfold on failure."""
    mean_diag = float(torch.diag(H).mean())
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for attempt in range(MAX_DAMP_TRIES):
        damp = percdamp * mean_diag
        L, info = torch.linalg.cholesky_ex(H + damp * eye)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0:
                return U
        if attempt + 1 < MAX_DAMP_TRIES:
            new = percdamp * 10 if percdamp > 0 else 1e-4
            logger.warning(
                "Cholesky of the Hessian failed with dampening %.3g; retrying with %.3g", percdamp, new
            )
            percdamp = new
    raise SolverError(
        f"the Hessian ({H.shape[0]} inputs) is not positive definite even with dampening {percdamp:g} "
        "of its mean diagonal; check the calibration data (too few samples, or NaN activations)"
    )


def _round_half_up(x: float) -> int:
    # Python's round() goes to even; half-up keeps the counts monotone in sparsity.
    return math.floor(x + 0.5 + 1e-9)
