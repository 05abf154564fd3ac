"""`SparseLinear`: a drop-in replacement for nn.Linear (and transformers' Conv1D) on the sparse kernels.

    >>> lin = nn.Linear(64, 32)
    >>> with torch.no_grad():
    ...     lin.weight.mul_(torch.rand(32, 64) > 0.7)
    >>> sp = SparseLinear.from_dense(lin, "int8")
    >>> sp(torch.randn(2, 64)).shape
    torch.Size([2, 32])

The module lives on the CPU and keeps its storage format whatever `.to(dtype)` asks (the model's dtype
only changes the dtype of its outputs); inputs are computed in fp32, or, with int8 values and
``act="dynamic-int8"`` (W8A8), quantized to int8 per token inside the kernel (``"static-int8"``: one fixed
input scale) and multiplied with VNNI integer dot products:

    >>> w8a8 = SparseLinear.from_dense(lin, "int8", act="dynamic-int8")
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
from sparseft.runtime.kernels import ACT_MODES, check_w8a8, isa_code, num_threads, row_sums, weight_args


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
    fmt_code, m, kk, kw, *ptrs, delta = _packed_args(layer)
    _kernels.matmul(
        fmt_code, isa_code(), m, kk, kw, *ptrs, x2d.data_ptr(), x2d.shape[0], x2d.stride(0), x2d.stride(1),
        y.data_ptr(), num_threads(), delta,
    )  # fmt: skip
    return y.reshape(*x.shape[:-1], layer.out_features).to(x.dtype)


def _packed_args(layer: SparseLinear) -> tuple:
    """``weight_args`` of the layer, cached; re-packed when a buffer was replaced (load, deepcopy,
    assignment), since the cached addresses would dangle."""
    args = layer._weight_args
    if (
        args is None
        or args[4] != layer.mask.data_ptr()
        or args[5] != layer.values.data_ptr()
        or args[-2] != (layer.bias.data_ptr() if layer.bias is not None else 0)
        or args[8] != (layer.rowsum.data_ptr() if layer.rowsum.numel() else 0)
        or args[6] != layer.rowptr.data_ptr()
    ):
        args = layer._weight_args = weight_args(layer.compressed(), layer.rowsum, layer.bias)
    return args


def w8a8_linear_eager(x: torch.Tensor, layer: SparseLinear) -> torch.Tensor:
    """The W8A8 forward of ``layer`` (act "dynamic-int8" / "static-int8") straight to the C kernel."""
    k = x.shape[-1]
    x2d = x.detach().reshape(-1, k)
    if x2d.dtype != torch.float32:
        x2d = x2d.float()
    y = torch.empty(x2d.shape[0], layer.out_features, dtype=torch.float32)
    _, m, kk, kw, *ptrs, _ = _packed_args(layer)
    _kernels.w8a8_matmul(
        isa_code(), m, kk, kw, *ptrs, x2d.data_ptr(), x2d.shape[0], x2d.stride(0), x2d.stride(1),
        y.data_ptr(), num_threads(), layer.static_scale,
    )  # fmt: skip
    return y.reshape(*x.shape[:-1], layer.out_features).to(x.dtype)


class SparseLinear(nn.Module):
    """y = x W^T + b with W stored as a bitmask + packed values (fp32, bf16 or int8).

    ``act``: "none" (fp32 activations), "dynamic-int8" (W8A8, int8 activations with per-token scales) or
    "static-int8" (W8A8 with the fixed ``input_scale``); the int8 modes need int8 values, bitmask index."""

    def __init__(
        self,
        cw: CompressedWeight,
        bias: torch.Tensor | None = None,
        act: str = "none",
        input_scale: float | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if act not in ACT_MODES:
            raise ConfigError(f"unknown activation mode {act!r}; expected one of {', '.join(ACT_MODES)}")
        if act != "none":
            check_w8a8(cw)
        if act == "static-int8" and (input_scale is None or not float(input_scale) > 0):
            raise ConfigError("act='static-int8' needs a positive input_scale (calibrated per tensor)")
        self.act = act
        self.fmt = cw.fmt
        self.index = cw.index
        self.out_features, self.in_features = cw.shape
        self.register_buffer("mask", cw.mask)
        self.register_buffer("values", cw.values)
        self.register_buffer("rowptr", cw.rowptr)
        self.register_buffer("scales", cw.scales)
        self.register_buffer("rowsum", row_sums(cw), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu().contiguous())
        # static-int8 only: saved with the weights (a None buffer is not part of the state dict)
        scale = None if act != "static-int8" else torch.tensor([float(input_scale)], dtype=torch.float32)
        self.register_buffer("input_scale", scale)
        self._weight_args: tuple | None = None  # packed addresses for the kernel, built on first call
        self._sync_static_scale()

    def _sync_static_scale(self) -> None:
        """``static_scale``: the kernel's input scale argument, the static scale or 0 (per-token scales).
        A Python float read once from the buffer: torch.compile cannot trace reading a tensor's value."""
        self.static_scale = float(self.input_scale[0]) if self.input_scale is not None else 0.0

    @classmethod
    def from_dense(
        cls,
        module: nn.Module,
        fmt: str = "fp32",
        mask: torch.Tensor | None = None,
        index: str = "bitmask",
        act: str = "none",
        scales: torch.Tensor | None = None,
        input_scale: float | torch.Tensor | None = None,
    ) -> SparseLinear:
        """Compress an nn.Linear / Conv1D; zeros of its weight (or ``~mask``) are dropped.

        ``index``: "bitmask", "delta" (very high sparsity) or "auto" (see format.DELTA_BELOW; the int8
        activation modes always take the bitmask). ``scales``: int8 scales to keep (a quantized model's),
        instead of max|row| / 127. ``act``, ``input_scale``: see the class."""
        if act != "none" and index == "auto":
            index = "bitmask"
        cw = compress(dense_weight(module), fmt, mask, index, scales)
        return cls(cw, getattr(module, "bias", None), act, input_scale)

    @classmethod
    def empty(
        cls,
        out_features: int,
        in_features: int,
        nnz: int,
        fmt: str,
        bias: bool,
        index: str = "bitmask",
        act: str = "none",
    ) -> SparseLinear:
        """A shell with buffers of the right sizes, to be filled by ``load_state_dict``."""
        cw = compress(torch.zeros(out_features, in_features), fmt, index=index)
        cw.values = torch.zeros(nnz + cw.values.numel(), dtype=cw.values.dtype)
        if index == "delta":
            cw.mask = torch.zeros(nnz + cw.mask.numel(), dtype=cw.mask.dtype)
        return cls(cw, torch.zeros(out_features) if bias else None, act, 1.0 if act == "static-int8" else None)

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
        self._sync_static_scale()

    def _apply(self, fn, recurse=True):  # noqa: ANN001
        # The kernels need these exact CPU dtypes; `model.to(torch.bfloat16)` must not convert them.
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act != "none":
            if not torch.compiler.is_compiling():
                return w8a8_linear_eager(x, self)
            return torch.ops.sparseft.sparse_linear_w8a8(
                x, self.out_features, self.mask, self.values, self.rowptr, self.scales, self.rowsum,
                self.bias, self.static_scale,
            )  # fmt: skip
        if not torch.compiler.is_compiling():
            # Eager: call the kernel directly; the dispatcher round trip costs more than a small layer.
            return sparse_linear_eager(x, self)
        return torch.ops.sparseft.sparse_linear(
            x, self.fmt, self.out_features, self.mask, self.values, self.rowptr, self.scales, self.rowsum,
            self.bias, self.index,
        )  # fmt: skip

    def extra_repr(self) -> str:
        cw = self.compressed()
        act = "" if self.act == "none" else f", act={self.act}"
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}, index={self.index}, density={cw.density:.3f}{act}"
