"""GPTQ (Frantar et al., 2022) int8 weight quantization that respects a sparsity mask: a pure solver.

Columns are quantized left to right on a fixed grid (per-channel scales of the original weight); each
column's rounding error is spread over the columns not yet quantized through the inverse Hessian, as in
OBS. Pruned weights (mask False) are "quantized" to exactly 0 and their leftover error is compensated
the same way, so the result is sparse with the very same mask: the joint sparse+int8 step of the
SparseGPT paper with the mask already chosen. Names follow the reference code: `W` (out, in),
`H` (in, in) = 2/n sum x x^T, `Hinv` the upper Cholesky factor of H^-1, `Err` a block's scaled errors.

On a model it runs as the "gptq" solver of the sequential driver (`sparseft.prune.solvers`), the very
driver SparseGPT uses: `quantize_model(..., method="gptq")` collects each layer's H block by block, on
the outputs of the blocks already quantized, as GPTQ's reference code does.

`gptq_quantize_groups` is the same loop on a grid with a scale per row and group of columns (default:
the runtime's int4, codes -7..7 per 128 columns), each group's scale taken from its error-updated
weights when the loop reaches it; `sparseft.quant.head` runs it on the output projection.

After GPTQ a row's largest |q| may end below 127, so its scale is not max|W[r]| / 127: the runtime
must be given the scales (`sparseft.quant.compress_quantized`, the compress stage and `sparseft compress`
on a quantized folder do so) to get back exactly these `q`.

    >>> X = torch.randn(1000, 64) @ torch.randn(64, 64)          # correlated inputs (tokens, in)
    >>> H = 2 * X.T @ X / len(X)
    >>> W = torch.randn(32, 64) * (torch.rand(32, 64) > 0.5)
    >>> res = gptq_quantize(W, H, mask=W != 0)
    >>> res.error <= output_error(W, fake_quantize_weight(W), H)  # beats round-to-nearest
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sparseft.errors import ConfigError
from sparseft.quant.weights import QMAX, weight_scale

INT4_GROUP, INT4_QMAX = 128, 7  # the runtime's int4 format (sparseft.runtime.formats.Int4)


@dataclass(frozen=True)
class GPTQResult:
    """Codes `q` (int8 tensor), scales ((out, 1) per row; (out, groups) from `gptq_quantize_groups`), the
    dequantized weight (fp32) and its output error on H."""

    q: Tensor
    scale: Tensor
    weight: Tensor
    error: float


def output_error(W: Tensor, W_new: Tensor, H: Tensor) -> float:
    """Mean over calibration tokens of ||(W - W_new) x||^2 = tr(dW H dW^T) / 2 for H = 2/n sum x x^T."""
    dW = (W - W_new).double()
    return float(torch.einsum("ij,jk,ik->", dW, H.double(), dW) / 2)


def _inverse_hessian_upper(H: Tensor, percdamp: float) -> Tensor:
    """Upper Cholesky factor of (H + damp I)^-1, damp = percdamp * mean(diag H)."""
    damp = percdamp * torch.mean(torch.diag(H))
    Hd = H + damp * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(Hd))
    return torch.linalg.cholesky(Hinv, upper=True)


def _check(W: Tensor, H: Tensor, blocksize: int, percdamp: float) -> None:
    if W.dim() != 2 or H.shape != (W.shape[1], W.shape[1]):
        raise ConfigError(f"need W (out, in) and H (in, in), got {tuple(W.shape)} and {tuple(H.shape)}")
    if blocksize < 1 or not 0 <= percdamp < 1:
        raise ConfigError(f"need blocksize >= 1 and 0 <= percdamp < 1, got {blocksize} and {percdamp}")


def _solve(
    W0: Tensor, H: Tensor, keep: Tensor, qmax: int, blocksize: int, percdamp: float,
    block_scale: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, list[Tensor]]:
    """The GPTQ column loop: (dequantized Q, the (out,) scale of each block). ``block_scale(W1, keep1)``
    gives a block's scale from its error-updated weights when the block starts (a fixed per-row scale
    ignores them; grouped scales are GPTQ's "scale when the group starts")."""
    H = H.detach().float().clone()
    dead = torch.diag(H) == 0  # inputs that never fired: any weight there is free, make it 0
    H[dead, dead] = 1
    Wc = (W0 * keep).masked_fill(dead[None, :], 0)
    Hinv = _inverse_hessian_upper(H, percdamp)
    Q, scales = torch.zeros_like(Wc), []
    for i1 in range(0, Wc.shape[1], blocksize):
        i2 = min(i1 + blocksize, Wc.shape[1])
        W1, Hinv1, keep1 = Wc[:, i1:i2].clone(), Hinv[i1:i2, i1:i2], keep[:, i1:i2]
        scale = block_scale(W1, keep1)
        scales.append(scale)
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            q = torch.round(w / scale).clamp_(-qmax, qmax) * scale * keep1[:, i]
            Q[:, i1 + i] = q
            err = (w - q) / d
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]  # OBS update of the columns still to come
            Err1[:, i] = err
        Wc[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q, scales


@torch.no_grad()
def gptq_quantize(
    W: Tensor,
    H: Tensor,
    mask: Tensor | None = None,
    scale: Tensor | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> GPTQResult:
    """Quantize W (out, in) to int8 on `scale` ((out, 1); default max|W| per kept row / 127) with GPTQ
    error compensation from H (in, in); entries with mask False end exactly 0."""
    _check(W, H, blocksize, percdamp)
    W0 = W.detach().float()
    keep = torch.ones_like(W0, dtype=torch.bool) if mask is None else mask.to(W0.device, torch.bool)
    scale = weight_scale(W0, "per_channel", keep) if scale is None else scale.float().reshape(-1, 1)
    Q, _ = _solve(W0, H, keep, QMAX, blocksize, percdamp, lambda W1, keep1: scale[:, 0])
    q_int = torch.round(Q / scale).to(torch.int8)
    return GPTQResult(q_int, scale, Q, output_error(W0 * keep, Q, H))


@torch.no_grad()
def gptq_quantize_groups(
    W: Tensor,
    H: Tensor,
    mask: Tensor | None = None,
    group_columns: int = INT4_GROUP,
    qmax: int = INT4_QMAX,
    percdamp: float = 0.01,
) -> GPTQResult:
    """Quantize W (out, in) to codes in [-qmax, qmax] with a scale per row and group of `group_columns`
    columns (default: the runtime's int4 grid, 7 and 128), each taken as max|w| / qmax of the group's
    error-updated kept weights when GPTQ reaches it (1 for an all-zero group); mask False ends 0.

        >>> res = gptq_quantize_groups(W, H)        # res.scale: (out, groups), res.weight = q * scale
        >>> compress(res.weight, "int4", scales=res.scale).decompress()   # == res.weight
    """
    _check(W, H, group_columns, percdamp)
    W0 = W.detach().float()
    keep = torch.ones_like(W0, dtype=torch.bool) if mask is None else mask.to(W0.device, torch.bool)

    def group_scale(W1: Tensor, keep1: Tensor) -> Tensor:
        amax = (W1 * keep1).abs().amax(dim=1)
        return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))

    Q, scales = _solve(W0, H, keep, qmax, group_columns, percdamp, group_scale)
    scale = torch.stack(scales, dim=1)
    q_int = torch.round(Q / scale.repeat_interleave(group_columns, dim=1)[:, : W0.shape[1]]).to(torch.int8)
    return GPTQResult(q_int, scale, Q, output_error(W0 * keep, Q, H))
