"""sparseft: make transformer models sparse without losing accuracy, then make them faster.

Pipeline (each stage usable alone): oneshot -> finetune -> quantize -> compress -> runtime -> evaluate.

>>> from sparseft.models import load_model
>>> from sparseft.prune import magnitude_prune
"""

__version__ = "0.1.0"
