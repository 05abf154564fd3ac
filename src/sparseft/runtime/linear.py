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

One forward path: eager calls go straight to the C kernel through `kernels.linear` with the layer's
`WeightHandle` (packed once, rebuilt when a buffer is assigned or loaded); under torch.compile the same
call is the single op ``sparseft::linear`` (runtime/ops.py). Code that inspects ``layer.weight`` (e.g.
T5 reads ``wo.weight.dtype``) gets a `WeightInfo` (shape, dtype, device; not a tensor, so nothing is
decompressed); ``layer.compressed().decompress()`` is the dense weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.models.layers import weight_matrix
from sparseft.models.walk import is_prunable
from sparseft.runtime import ops
from sparseft.runtime.format import CompressedWeight, compress, empty_compressed
from sparseft.runtime.kernels import ACT_MODES, WeightHandle, check_w8a8, linear, row_sums

# Buffers the packed handle points into: assigning any of them drops the handle (rebuilt on next call).
_HANDLE_BUFFERS = frozenset({"mask", "values", "rowptr", "scales", "rowsum", "bias", "input_scale"})


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The (out_features, in_features) weight of an nn.Linear or a transformers Conv1D."""
    if not is_prunable(module):
        raise ConfigError(f"cannot make {type(module).__name__} sparse: expected nn.Linear or Conv1D")
    return weight_matrix(module)  # the one place that knows Conv1D stores (in, out)


@dataclass(frozen=True)
class WeightInfo:
    """What ``SparseLinear.weight`` answers for code written for nn.Linear: the (out, in) shape, the dtype
    the layer computes in (fp32), the device. Not a tensor: code that checks ``isinstance(w, Tensor)``
    (T5) leaves its input alone."""

    shape: torch.Size
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    requires_grad: bool = False  # the stored values are not trained through this layer

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None) -> torch.Size | int:
        """Like ``Tensor.size``: ``weight.size(0)`` is out_features, ``weight.size(1)`` in_features."""
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return self.shape.numel()


class SparseLinear(nn.Module):
    """y = x W^T + b with W stored as a bitmask + packed values (a registered format: fp32, bf16, int8, fp16).

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
        cw.validate()
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
        self._handle: WeightHandle | None = None  # packed kernel arguments, built on first call
        self.op_id = ops.register_layer(self)  # this layer in the sparseft::linear op (compiled path)

    @property
    def static_scale(self) -> float:
        """The kernel's input scale: the static int8 input scale, or 0 (per-token scales / fp32)."""
        return self.kernel_handle().input_scale

    @property
    def weight(self) -> WeightInfo:
        """Shape / dtype / device of the weight, for code written for nn.Linear (see the module doc)."""
        return WeightInfo(torch.Size((self.out_features, self.in_features)))

    def kernel_handle(self) -> WeightHandle:
        """The packed kernel arguments (weights + activation mode), built once and after a buffer changed."""
        handle = self._handle
        if handle is None:
            # The static scale is read once here as a Python float: torch.compile cannot trace reading a
            # tensor's value, and the kernel takes it as an argument.
            scale = float(self.input_scale[0]) if self.input_scale is not None else 0.0
            handle = self._handle = WeightHandle(self.compressed(), self.bias, self.act, scale, self.rowsum)
        return handle

    def __setattr__(self, name: str, value: object) -> None:
        if name == "weight" and isinstance(value, torch.Tensor):
            # transformers' tie_weights assigns a tied lm_head's dense weight; a SparseLinear keeps
            # computing with its compressed one (as before this property existed), so the tie is ignored.
            return
        if name in _HANDLE_BUFFERS and "_handle" in self.__dict__:
            self.__dict__["_handle"] = None  # the handle points into the old tensor: rebuild it
        super().__setattr__(name, value)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None  # a C capsule: not copyable, rebuilt on first call
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.op_id = ops.register_layer(self)  # a copy is a layer of its own for the compiled op

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
        store_all: bool = False,
    ) -> SparseLinear:
        """Compress an nn.Linear / Conv1D; zeros of its weight (or ``~mask``) are dropped, unless ``store_all``
        (every column stored: see `format.compress`).

        ``index``: "bitmask", "delta" (very high sparsity) or "auto" (see format.DELTA_BELOW; the int8
        activation modes always take the bitmask). ``scales``: int8 / int4 scales to keep (a quantized model's),
        instead of the weight's own (max|row| / 127, max|group| / 7). ``act``, ``input_scale``: see the class."""
        if act != "none" and index == "auto":
            index = "bitmask"
        cw = compress(dense_weight(module), fmt, mask, index, scales, store_all)
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
        """A shell with buffers of the right sizes, to be filled by ``load_state_dict`` (no dense matrix
        is ever allocated: an untrusted shape costs only the sizes the file itself holds)."""
        cw = empty_compressed(out_features, in_features, nnz, fmt, index)
        return cls(cw, torch.zeros(out_features) if bias else None, act, 1.0 if act == "static-int8" else None)

    def compressed(self) -> CompressedWeight:
        """The weight as a CompressedWeight (shares storage)."""
        return CompressedWeight(
            self.fmt, (self.out_features, self.in_features), self.mask, self.values, self.rowptr, self.scales,
            self.index,
        )  # fmt: skip

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        cw = self.compressed()
        try:
            cw.validate_contents()  # loaded tensors are untrusted: check them before any kernel reads them
        except ConfigError as err:
            raise ConfigError(f"layer {prefix.rstrip('.')}: {err}") from None
        self.rowsum = row_sums(cw)  # derived data, recomputed rather than stored
        self._handle = None

    def _apply(self, fn, recurse=True):  # noqa: ANN001
        # The kernels need these exact CPU dtypes; `model.to(torch.bfloat16)` must not convert them.
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return torch.ops.sparseft.linear(x, self.op_id, self.out_features).to(x.dtype)
        # Eager: straight to the kernel; the dispatcher round trip costs more than a small layer.
        return linear(x, self._handle or self.kernel_handle())

    def extra_repr(self) -> str:
        cw = self.compressed()
        act = "" if self.act == "none" else f", act={self.act}"
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}, index={self.index}, density={cw.density:.3f}{act}"
