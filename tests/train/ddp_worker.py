"""One rank of the 2-process DDP/FSDP tests (run by torchrun): GMP + SquareHead on a tiny Llama, then dump state.

    python -m torch.distributed.run --nproc_per_node 2 tests/train/ddp_worker.py OUT_DIR [ddp|fsdp]

Under FSDP the dumped weights and masks are the full tensors gathered from the shards, and the dump
records how the student's and the teacher's block weights were held (sharded or not, local size).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_helpers import RandomTokens, tiny_args  # noqa: E402

from sparseft.train import DistillConfig, GMPSchedule, SparseTrainer  # noqa: E402
from sparseft.train.fsdp import end_distributed, fsdp_config_for, full_state_dict, is_sharded  # noqa: E402
from tiny_models import build_tiny_model  # noqa: E402


def main(out_dir: Path, mode: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    teacher = build_tiny_model("llama", seed=0)
    student = build_tiny_model("llama", seed=1)  # same seed on both ranks, as a real run loads one checkpoint
    initial = {n: p.detach().clone() for n, p in student.named_parameters()}
    sharding = {"fsdp": True, "fsdp_config": fsdp_config_for(student)} if mode == "fsdp" else {}
    args = tiny_args(out_dir / "run", max_steps=6, per_device_train_batch_size=2, ddp_backend="gloo",
                     ddp_find_unused_parameters=False, **sharding)
    gmp = GMPSchedule(0.3, 0.6, start_step=0, end_step=4, frequency=2)
    trainer = SparseTrainer(model=student, args=args, train_dataset=RandomTokens(n=24, pad=4), teacher=teacher,
                            gmp=gmp, distill=DistillConfig(1.0, 0.0, 1.0))
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights = {n: t for n, t in full_state_dict(model).items() if n in initial}
    q_student = model.model.layers[0].self_attn.q_proj.weight
    q_teacher = trainer.teacher.model.layers[0].self_attn.q_proj.weight
    layout = {
        "student_sharded": is_sharded(q_student), "teacher_sharded": is_sharded(q_teacher),
        "student_local_rows": (q_student.to_local() if is_sharded(q_student) else q_student).shape[0],
        "teacher_local_rows": (q_teacher.to_local() if is_sharded(q_teacher) else q_teacher).shape[0],
    }
    torch.save({"weights": weights, "initial": initial, "masks": trainer.masks, "layout": layout,
                "world_size": trainer.args.world_size}, out_dir / f"rank{rank}.pt")
    end_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "ddp")
