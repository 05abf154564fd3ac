"""FSDP (version 2, `fully_shard`) for sparse fine-tuning, on GPUs and on CPU (gloo) alike.

accelerate 1.15 turns FSDP on only for accelerator devices: under `torchrun` on CPU it silently falls
back to DDP, although PyTorch's FSDP2 shards over gloo just fine. `enable_fsdp_on_cpu` switches the
accelerator state to FSDP when the training arguments ask for it, so the HF Trainer shards the student
as it would on GPUs. The rest keeps masks and the teacher consistent with sharded parameters:

- parameters become DTensors sharded along dim 0, so masks are distributed the same way
  (`shard_like`, applied by the trainer's MaskEnforcer) and the mask arithmetic stays local to each rank;
- the frozen teacher is sharded block by block (`shard_teacher`): each block gathers its weights for
  its forward and frees them after, so no rank ever holds the whole teacher;
- `gather_full` turns a (possibly sharded) tensor into the full one on every rank (a collective).

    >>> args = TrainingArguments(..., fsdp=True, fsdp_config=fsdp_config_for(model))
    >>> trainer = SparseTrainer(model=student, args=args, teacher=teacher, masks=masks, ...)
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sparseft.models.walk import find_blocks

log = logging.getLogger(__name__)


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return None
    return DTensor


def is_sharded(tensor: Any) -> bool:
    """True when `tensor` is a DTensor (a parameter sharded by FSDP2)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def gather_full(tensor: Tensor) -> Tensor:
    """The full tensor behind a DTensor (all ranks must call it together); plain tensors pass through."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def shard_like(full: Tensor, param: Tensor) -> Tensor:
    """`full` laid out like `param`: distributed with its mesh and placements when it is sharded.

    Every rank holds the same full mask, so each one just keeps its own slice; no data moves.
    """
    if not is_sharded(param):
        return full.to(param.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(param.device_mesh.device_type), param.device_mesh, param.placements,
                             src_data_rank=None)


def model_is_sharded(model: nn.Module) -> bool:
    return any(is_sharded(p) for p in model.parameters())


def fsdp_config_for(model: nn.Module) -> dict[str, Any]:
    """TrainingArguments `fsdp_config` for FSDP2 that wraps each transformer block of `model`."""
    classes = sorted({type(b.module).__name__ for b in find_blocks(model)})
    return {"fsdp_version": 2, "transformer_layer_cls_to_wrap": classes, "reshard_after_forward": True}


def enable_fsdp_on_cpu(trainer: Any) -> bool:
    """Switch a CPU Trainer's accelerator to FSDP when its arguments ask for FSDP; True if it did.

    Call right after `Trainer.create_accelerator_and_postprocess`. Accelerate's own state machine
    ignores the FSDP plugin on CPU; FSDP2 itself works there, so set the state it would have set.
    """
    args = trainer.args
    if args.fsdp_plugin_args is None or trainer.is_fsdp_enabled or args.world_size < 2:
        return False
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    state = trainer.accelerator.state
    state.fsdp_plugin = plugin
    # Every new AcceleratorState() copies the process-wide PartialState over its own fields: set both.
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    log.info("FSDP2 on CPU: accelerate falls back to DDP there, so sharding is switched on explicitly")
    return True


def shard_teacher(teacher: nn.Module) -> nn.Module:
    """Shard a frozen teacher block by block with FSDP2 (each block gathers its weights per forward).

    Only the blocks are sharded: embeddings and heads stay replicated, so the base model can run on
    its own (no KD logits needed) and tied embeddings stay plain tensors.
    """
    from torch.distributed.fsdp import fully_shard

    for block in find_blocks(teacher):
        fully_shard(block.module, reshard_after_forward=True)
    return teacher


@torch.no_grad()
def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer of a (possibly sharded) model as full CPU tensors (collective)."""
    return {name: gather_full(t).detach().cpu() for name, t in model.state_dict().items()}


def end_distributed() -> None:
    """Close the process group of a torchrun/accelerate run (no-op otherwise).

    A group left open at interpreter exit lets gloo's threads die mid-call: rank 0 then aborts with
    "terminate called without an active exception" after a run that succeeded."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
