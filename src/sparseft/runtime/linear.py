"""`SparseLinear`: a drop-in replacement for nn.Linear (and transformers' Conv1D) on the sparse kernels.

    >>> lin = nn.Linear(64, 32)
    >>> with torch.no_grad():
    ...     lin.weight.mul_(torch.rand(32, 64) > 0.7)
    >>> sp = SparseLinear.from_dense(lin, "int8")
    >>> sp(torch.randn(2, 64)).shape
    torch.Size([2, 32])

The module lives on the CPU and keeps its storage format whatever `.to(dtype)` asks (the model's dtype
only changes the dtype of its outputs); inputs are computed in fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.runtime import (
    _kernels,
    ops,  # noqa: F401  (registers torch.ops.sparseft.sparse_linear)
)
from sparseft.runtime.format import CompressedWeight, compress
from sparseft.runtime.kernels import isa_code, num_threads, row_sums, weight_args


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The (out_features, in_features) weight of an nn.Linear or a transformers Conv1D."""
    if isinstance(module, nn.Linear):
        return module.weight
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.t()  # Conv1D stores (in, out) and computes x @ W
    raise ConfigError(f"cannot make {type(module).__name__} sparse: expected nn.Linear or Conv1D")


def sparse_linear_eager(x: torch.Tensor, layer: SparseLinear) -> torch.Tensor:
    """The forward of ``layer`` straight to the C kernel (same result as the custom op).

    Decode calls hundreds of small layers per token, so the fixed per-call cost matters: the weight's
    addresses are packed once (``layer._weight_args``) and only x and y are handled per call."""
    k = x.shape[-1]
    x2d = x.detach().reshape(-1, k)
    if x2d.dtype != torch.float32:
        x2d = x2d.float()
    y = torch.empty(x2d.shape[0], layer.out_features, dtype=torch.float32)
    args = layer._weight_args
    # Re-pack when a buffer was replaced (load, deepcopy, assignment): the cached addresses would dangle.
    if (
        args is None
        or args[4] != layer.mask.data_ptr()
        or args[5] != layer.values.data_ptr()
        or args[-2] != (layer.bias.data_ptr() if layer.bias is not None else 0)
        or args[8] != (layer.rowsum.data_ptr() if layer.rowsum.numel() else 0)
        or args[6] != layer.rowptr.data_ptr()
    ):
        args = layer._weight_args = weight_args(layer.compressed(), layer.rowsum, layer.bias)
    fmt_code, m, kk, kw, *ptrs, delta = args
    _kernels.matmul(
        fmt_code, isa_code(), m, kk, kw, *ptrs, x2d.data_ptr(), x2d.shape[0], x2d.stride(0), x2d.stride(1),
        y.data_ptr(), num_threads(), delta,
    )  # fmt: skip
    return y.reshape(*x.shape[:-1], layer.out_features).to(x.dtype)


class SparseLinear(nn.Module):
    """y = x W^T + b with W stored as a bitmask + packed values (fp32, bf16 or int8)."""

    def __init__(self, cw: CompressedWeight, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.fmt = cw.fmt
        self.index = cw.index
        self.out_features, self.in_features = cw.shape
        self.register_buffer("mask", cw.mask)
        self.register_buffer("values", cw.values)
        self.register_buffer("rowptr", cw.rowptr)
        self.register_buffer("scales", cw.scales)
        self.register_buffer("rowsum", row_sums(cw), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu().contiguous())
        self._weight_args: tuple | None = None  # packed addresses for the kernel, built on first call

    @classmethod
    def from_dense(
        cls, module: nn.Module, fmt: str = "fp32", mask: torch.Tensor | None = None, index: str = "bitmask"
    ) -> SparseLinear:
        """Compress an nn.Linear / Conv1D; zeros of its weight (or ``~mask``) are dropped.

        ``index``: "bitmask", "delta" (very high sparsity) or "auto" (see format.DELTA_BELOW)."""
        cw = compress(dense_weight(module), fmt, mask, index)
        return cls(cw, getattr(module, "bias", None))

    @classmethod
    def empty(
        cls, out_features: int, in_features: int, nnz: int, fmt: str, bias: bool, index: str = "bitmask"
    ) -> SparseLinear:
        """A shell with buffers of the right sizes, to be filled by ``load_state_dict``."""
        cw = compress(torch.zeros(out_features, in_features), fmt, index=index)
        cw.values = torch.zeros(nnz + cw.values.numel(), dtype=cw.values.dtype)
        if index == "delta":
            cw.mask = torch.zeros(nnz + cw.mask.numel(), dtype=cw.mask.dtype)
        return cls(cw, torch.zeros(out_features) if bias else None)

    def compressed(self) -> CompressedWeight:
        """The weight as a CompressedWeight (shares storage)."""
        return CompressedWeight(
            self.fmt, (self.out_features, self.in_features), self.mask, self.values, self.rowptr, self.scales,
            self.index,
        )  # fmt: skip

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.rowsum = row_sums(self.compressed())  # derived data, recomputed rather than stored
        self._weight_args = None

    def _apply(self, fn, recurse=True):  # noqa: ANN001
        # The kernels need these exact CPU dtypes; `model.to(torch.bfloat16)` must not convert them.
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            # Eager: call the kernel directly; the dispatcher round trip costs more than a small layer.
            return sparse_linear_eager(x, self)
        return torch.ops.sparseft.sparse_linear(
            x, self.fmt, self.out_features, self.mask, self.values, self.rowptr, self.scales, self.rowsum,
            self.bias, self.index,
        )  # fmt: skip

    def extra_repr(self) -> str:
        cw = self.compressed()
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}, index={self.index}, density={cw.density:.3f}"
