"""Sparse CPU runtime: bitmask weight format, C kernels, SparseLinear, model converter, checkpoints.

>>> from sparseft.runtime import sparsify_model, save_compressed, load_compressed
>>> sparsify_model(model, fmt="int8")          # swap every pruned Linear for SparseLinear
>>> save_compressed(model, "out/model-70-int8")
>>> model = load_compressed("out/model-70-int8")

Value formats (fp32, bf16, int8, fp16) are registered in runtime/formats.py (`get_format`); the kernels
are reached through one packed handle per weight (`pack_weight`) and one call (`linear`); large
batches may run on a dense copy instead where that is faster (runtime/dense_batch.py).
"""

from sparseft.runtime.checkpoint import load_compressed, save_compressed
from sparseft.runtime.convert import Int8Spec, select_layers, sparsify_model
from sparseft.runtime.dense_batch import forced_dense_batches, set_dense_batches
from sparseft.runtime.format import CompressedWeight, compress
from sparseft.runtime.formats import FORMATS, ValueFormat, format_names, get_format, register_format
from sparseft.runtime.kernels import (
    WeightHandle,
    best_isa,
    forced_isa,
    linear,
    pack_weight,
    set_isa,
    set_num_threads,
    sparse_matmul,
    sparse_matmul_w8a8,
)
from sparseft.runtime.linear import SparseLinear, WeightInfo

__all__ = [
    "FORMATS",
    "CompressedWeight",
    "Int8Spec",
    "SparseLinear",
    "ValueFormat",
    "WeightHandle",
    "WeightInfo",
    "best_isa",
    "compress",
    "forced_dense_batches",
    "forced_isa",
    "format_names",
    "get_format",
    "linear",
    "load_compressed",
    "pack_weight",
    "register_format",
    "save_compressed",
    "select_layers",
    "set_dense_batches",
    "set_isa",
    "set_num_threads",
    "sparse_matmul",
    "sparse_matmul_w8a8",
    "sparsify_model",
]
