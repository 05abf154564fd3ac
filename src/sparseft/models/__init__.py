"""Load any HF model (folder, hub id, GGUF, packaged name) and walk it generically.

>>> from sparseft.models import load_model, find_blocks, find_prunable
>>> model = load_model("smollm2-135m")            # packaged, no hub needed
>>> [b.name for b in find_blocks(model)][:2]
['model.layers.0', 'model.layers.1']
>>> sorted(find_prunable(model))[:1]
['model.layers.0.mlp.down_proj']
"""

from sparseft.models.loading import load_model, load_tokenizer
from sparseft.models.registry import PACKAGED_MODELS, packaged_model_dir
from sparseft.models.walk import Block, find_blocks, find_prunable, freeze_parameters, weight_matrix

__all__ = [
    "PACKAGED_MODELS",
    "Block",
    "find_blocks",
    "find_prunable",
    "freeze_parameters",
    "load_model",
    "load_tokenizer",
    "packaged_model_dir",
    "weight_matrix",
]
