"""Hand a quantized model to the sparse runtime with its exact int8 values, scales and activation modes.

The quantize stage stores each quantized layer's weight as q * scale (fake-quant) plus the scales. The
runtime's plain int8 compression would re-derive scales as max|row| / 127, which changes the int8 values
wherever a row's largest |q| is below 127 (GPTQ). Passing the stored scales instead gives back exactly
q; W8A8 layers (dynamic per-token or static activations) run on the W8A8 kernels, weight-only layers on
the int8 kernels with fp32 activations.

    >>> fq = read_quantizer("runs/s50-w8a8")                 # or the FakeQuantizer quantize_model returned
    >>> names = compress_quantized(model, fq, masks=masks)   # in place; SparseLinear layers
    >>> model.model.layers[0].mlp.up_proj.act
    'dynamic-int8'

Layers the quantize stage left in full precision (e.g. `ignore: ['mlp\\.down_proj$']`) keep full
precision: `other_fmt` ("fp32" by default, or "bf16") when they are sparse, untouched when dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from sparseft.quant.fakequant import FakeQuantizer

ACT_MODE = {None: "none", "dynamic": "dynamic-int8", "static": "static-int8"}


def runtime_int8_specs(fq: FakeQuantizer) -> dict:
    """Layer name -> `sparseft.runtime.convert.Int8Spec` (scales kept exactly, activation mode)."""
    from sparseft.runtime.convert import Int8Spec

    return {
        name: Int8Spec(
            lq.weight_scale.detach().float(),
            ACT_MODE[lq.activations],
            None if lq.input_scale is None else float(lq.input_scale),
        )
        for name, lq in fq.layers.items()
    }


def folder_int8_specs(folder: str | Path) -> dict:
    """`runtime_int8_specs` of a quantized model folder; {} when the folder is not quantized."""
    from sparseft.quant.checkpoint import SCALES_FILE, read_quantizer

    if not (Path(folder) / SCALES_FILE).is_file():
        return {}
    return runtime_int8_specs(read_quantizer(folder))


def compress_quantized(
    model: nn.Module,
    fq: FakeQuantizer | Mapping,
    masks: Mapping[str, Tensor] | None = None,
    other_fmt: str = "fp32",
    index: str = "bitmask",
) -> list[str]:
    """Swap the quantized layers (and the other sparse ones, in `other_fmt`) for SparseLinear in place.

    `fq`: the model's FakeQuantizer, or specs from `runtime_int8_specs` / `folder_int8_specs`. Its
    activation hooks, if attached, are removed: the W8A8 kernels quantize the activations themselves."""
    from sparseft.runtime import sparsify_model

    if isinstance(fq, FakeQuantizer):
        fq.remove()
        specs = runtime_int8_specs(fq)
    else:
        specs = dict(fq)
    return sparsify_model(model, other_fmt, masks=masks, index=index, int8=specs)
