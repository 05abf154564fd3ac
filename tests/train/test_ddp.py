"""Two CPU processes (gloo) under torchrun: masks and weights agree across ranks, pruned weights are zero."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_keep_identical_masks_and_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == 2
    assert set(r0["masks"]) == set(r1["masks"]) and r0["masks"]
    total = pruned = 0
    for name, mask in r0["masks"].items():
        assert torch.equal(mask, r1["masks"][name]), name
        weight = r0["weights"][name + ".weight"]
        assert (weight[~mask] == 0).all(), name  # exactly zero, not just small
        total, pruned = total + mask.numel(), pruned + int((~mask).sum())
    assert pruned == sum(round(0.6 * m.numel()) for m in r0["masks"].values())  # GMP reached its final 60%
    changed = False
    for name, weight in r0["weights"].items():
        assert torch.equal(weight, r1["weights"][name]), name  # same all-reduced gradients on both ranks
        changed |= not torch.equal(weight, r0["initial"][name])
    assert changed
