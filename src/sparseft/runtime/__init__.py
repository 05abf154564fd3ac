"""Sparse CPU runtime: bitmask weight format, C kernels, SparseLinear, model converter, checkpoints.

>>> from sparseft.runtime import sparsify_model, save_compressed, load_compressed
>>> sparsify_model(model, fmt="int8")          # swap every pruned Linear for SparseLinear
>>> save_compressed(model, "out/model-70-int8")
>>> model = load_compressed("out/model-70-int8")
"""

from sparseft.runtime.checkpoint import load_compressed, save_compressed
from sparseft.runtime.convert import Int8Spec, select_layers, sparsify_model
from sparseft.runtime.format import FORMATS, CompressedWeight, compress
from sparseft.runtime.kernels import (
    best_isa,
    forced_isa,
    set_isa,
    set_num_threads,
    sparse_matmul,
    sparse_matmul_w8a8,
)
from sparseft.runtime.linear import SparseLinear

__all__ = [
    "FORMATS",
    "CompressedWeight",
    "Int8Spec",
    "SparseLinear",
    "best_isa",
    "compress",
    "forced_isa",
    "load_compressed",
    "save_compressed",
    "select_layers",
    "set_isa",
    "set_num_threads",
    "sparse_matmul",
    "sparse_matmul_w8a8",
    "sparsify_model",
]
