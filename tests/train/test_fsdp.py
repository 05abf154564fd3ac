"""FSDP2 on CPU (gloo, 2 ranks under torchrun): student and teacher sharded, masks kept, same result as DDP."""

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


def _run(out: Path, mode: str) -> tuple[dict, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(WORKER), str(out), mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tuple(torch.load(out / f"rank{r}.pt") for r in (0, 1))


def test_fsdp_shards_student_and_teacher_and_matches_ddp(tmp_path):
    f0, f1 = _run(tmp_path / "fsdp", "fsdp")
    # Both models really were sharded: each rank held half the rows of a block weight.
    for dump in (f0, f1):
        layout = dump["layout"]
        assert layout["student_sharded"] and layout["teacher_sharded"], layout
        assert layout["student_local_rows"] < f0["weights"]["model.layers.0.self_attn.q_proj.weight"].shape[0]
        assert layout["teacher_local_rows"] < f0["weights"]["model.layers.0.self_attn.q_proj.weight"].shape[0]
    assert f0["masks"] and set(f0["masks"]) == set(f1["masks"])
    for name, mask in f0["masks"].items():
        assert torch.equal(mask, f1["masks"][name]), name
        assert (f0["weights"][name + ".weight"][~mask] == 0).all(), name  # exactly zero after gathering
    assert sum(int((~m).sum()) for m in f0["masks"].values()) == sum(
        round(0.6 * m.numel()) for m in f0["masks"].values()
    )
    for name, weight in f0["weights"].items():
        assert torch.equal(weight, f1["weights"][name]), name

    # The same run under DDP (all-reduced full gradients) reaches the same weights and masks: sharding
    # changes where the arithmetic happens, not what it computes (up to summation order).
    d0, _ = _run(tmp_path / "ddp", "ddp")
    assert not d0["layout"]["student_sharded"]
    for name, mask in d0["masks"].items():
        assert torch.equal(mask, f0["masks"][name]), name
    moved = 0.0
    for name, weight in d0["weights"].items():
        torch.testing.assert_close(f0["weights"][name], weight, rtol=1e-4, atol=5e-5, msg=name)
        moved = max(moved, float((weight - d0["initial"][name]).abs().max()))
    assert moved > 1e-3  # training did change the weights, so the agreement above is not vacuous
