"""INT8 quantization that keeps zeros: int8 weights per output channel (or per tensor), int8 activations
per token (dynamic) or per tensor (static, calibrated), fake-quant evaluation and a sensitivity report.

    >>> from sparseft.quant import quantize_model, layer_sensitivity, save_quantized
    >>> print(layer_sensitivity(model, calib_batches).format(max_rows=10))
    >>> fq = quantize_model(model, "w8a8", ignore=[r"mlp\\.down_proj$"], masks=masks)
    >>> save_quantized(model, "runs/smollm2-50-w8a8", fq, tokenizer=tok, masks=masks)
    >>> compress_quantized(model, fq, masks=masks)     # the same int8 values (and scales) on the sparse
    ...                                                # int8 kernels; W8A8 layers on the VNNI W8A8 kernel

Pure math: `weights.py`, `activations.py` (and `gptq.py`); model plumbing: `fakequant.py`,
`sensitivity.py`, `checkpoint.py`, `to_runtime.py`, `head.py` (GPTQ int4 / int8 of the output projection).
"""

from sparseft.quant.activations import (
    AbsMaxObserver,
    fake_quantize_per_token,
    fake_quantize_static,
    per_token_scale,
    quantize_activation,
    quantize_per_token,
)
from sparseft.quant.checkpoint import (
    SCALES_FILE,
    load_quantized,
    read_head_quant,
    read_quantizer,
    save_quantized,
)
from sparseft.quant.fakequant import (
    SCHEMES,
    FakeQuantizer,
    LayerQuant,
    QuantScheme,
    calibrate_input_scales,
    quantize_model,
)
from sparseft.quant.head import HEAD_FORMATS, HeadQuant, quantize_head
from sparseft.quant.sensitivity import (
    LayerSensitivity,
    SensitivityReport,
    group_loss_sensitivity,
    layer_sensitivity,
)
from sparseft.quant.to_runtime import compress_quantized, folder_int8_specs, runtime_int8_specs
from sparseft.quant.weights import (
    QMAX,
    QuantizedWeight,
    dequantize_weight,
    fake_quantize_weight,
    quantize_weight,
    quantize_with_scale,
    weight_scale,
)

__all__ = [
    "HEAD_FORMATS",
    "QMAX",
    "SCALES_FILE",
    "SCHEMES",
    "AbsMaxObserver",
    "FakeQuantizer",
    "HeadQuant",
    "LayerQuant",
    "LayerSensitivity",
    "QuantScheme",
    "QuantizedWeight",
    "SensitivityReport",
    "calibrate_input_scales",
    "compress_quantized",
    "dequantize_weight",
    "fake_quantize_per_token",
    "fake_quantize_static",
    "fake_quantize_weight",
    "folder_int8_specs",
    "group_loss_sensitivity",
    "layer_sensitivity",
    "load_quantized",
    "per_token_scale",
    "quantize_activation",
    "quantize_head",
    "quantize_model",
    "quantize_per_token",
    "quantize_weight",
    "quantize_with_scale",
    "read_head_quant",
    "read_quantizer",
    "runtime_int8_specs",
    "save_quantized",
    "weight_scale",
]
