"""Distillation losses (pure functions) and hidden-state capture (hooks).

>>> from sparseft.distill import HiddenStateCapture, squarehead_loss, kd_loss
>>> loss = squarehead_loss(student_states, teacher_states, masks)
"""

from sparseft.distill.capture import HiddenStateCapture, block_hidden_state, layer_masks, stack_padding_masks
from sparseft.distill.kd import kd_loss, task_loss
from sparseft.distill.squarehead import squarehead_layer_loss, squarehead_loss

__all__ = [
    "HiddenStateCapture",
    "block_hidden_state",
    "kd_loss",
    "layer_masks",
    "squarehead_layer_loss",
    "squarehead_loss",
    "stack_padding_masks",
    "task_loss",
]
