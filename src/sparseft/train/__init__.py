"""Sparse fine-tuning on the HF Trainer: distillation from a dense teacher, enforced masks, GMP.

>>> from sparseft.train import SparseTrainer, DistillConfig, GMPSchedule, CausalLMTexts
"""

from sparseft.train.data import CausalLMTexts, pad_collate
from sparseft.train.gmp import GMPSchedule, gmp_masks
from sparseft.train.trainer import (
    MASKS_FILE,
    DistillConfig,
    NonFiniteLossError,
    SparseSeq2SeqTrainer,
    SparseTrainer,
)

__all__ = [
    "MASKS_FILE",
    "CausalLMTexts",
    "DistillConfig",
    "GMPSchedule",
    "NonFiniteLossError",
    "SparseSeq2SeqTrainer",
    "SparseTrainer",
    "gmp_masks",
    "pad_collate",
]
