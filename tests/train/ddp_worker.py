"""One rank of the 2-process DDP test (run by torchrun): GMP + SquareHead on a tiny Llama, then dump state.

    python -m torch.distributed.run --nproc_per_node 2 tests/train/ddp_worker.py OUT_DIR
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
from tiny_models import build_tiny_model  # noqa: E402


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    teacher = build_tiny_model("llama", seed=0)
    student = build_tiny_model("llama", seed=1)  # same seed on both ranks, as a real run loads one checkpoint
    initial = {n: p.detach().clone() for n, p in student.named_parameters()}
    args = tiny_args(out_dir / "run", max_steps=6, per_device_train_batch_size=2, ddp_backend="gloo",
                     ddp_find_unused_parameters=False)
    gmp = GMPSchedule(0.3, 0.6, start_step=0, end_step=4, frequency=2)
    trainer = SparseTrainer(model=student, args=args, train_dataset=RandomTokens(n=24, pad=4), teacher=teacher,
                            gmp=gmp, distill=DistillConfig(1.0, 0.0, 1.0))
    trainer.train()
    weights = {n: p.detach().clone() for n, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()}
    torch.save({"weights": weights, "initial": initial, "masks": trainer.enforcer.masks,
                "world_size": trainer.args.world_size}, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
