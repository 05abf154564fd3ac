"""``sparseft::linear``: the sparse matmul as one torch op, so torch.compile sees one opaque call.

    >>> y = torch.ops.sparseft.linear(x, layer.op_id, layer.out_features)   # fp32 (..., out_features)

Compiled SparseLinear layers (fp32 or int8 activations alike) call it; eager ones call
`kernels.linear` directly, which is also what the op runs. The op reaches its layer through ``op_id``,
a slot of a process-wide table of weak references, and the layer's packed `WeightHandle` (weights and
activation mode) from there: the compiled graph passes only x and two ints, because each tensor argument
of a Python-implemented op costs ~1 us to box and a decode step makes ~120 of these calls. It is
registered with the plain ``torch.library.Library`` API because the ``custom_op`` wrapper costs ~50 us
per call, more than a small layer's kernel.
"""

from __future__ import annotations

import weakref
from typing import Protocol

import torch

from sparseft.runtime.kernels import WeightHandle, linear


class _Layer(Protocol):
    _handle: WeightHandle | None

    def kernel_handle(self) -> WeightHandle: ...


_LAYERS: list[weakref.ref] = []

_lib = torch.library.Library("sparseft", "FRAGMENT")
_lib.define("linear(Tensor x, int layer, int out_features) -> Tensor")


def register_layer(layer: _Layer) -> int:
    """A new ``op_id`` for ``layer`` (held weakly: the table never keeps a layer alive)."""
    _LAYERS.append(weakref.ref(layer))
    return len(_LAYERS) - 1


def _linear(x: torch.Tensor, layer: int, out_features: int) -> torch.Tensor:
    """y = x W^T + b of the layer ``layer`` in fp32 (the caller casts to its dtype)."""
    owner = _LAYERS[layer]()
    if owner is None:
        raise RuntimeError(f"sparseft::linear: layer {layer} no longer exists")
    y = linear(x, owner._handle or owner.kernel_handle())
    return y if y.dtype == torch.float32 else y.float()  # the schema's (and fake's) dtype


_lib.impl("linear", _linear, "CPU")


@torch.library.register_fake("sparseft::linear")
def _(x: torch.Tensor, layer: int, out_features: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features, dtype=torch.float32)
