"""`sparseft finetune --fsdp` under torchrun on CPU: sharded run, masks kept, final model whole, TensorBoard logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch

from sparseft.models import load_model
from sparseft.prune import load_masks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tensorboard_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_finetune_cli_fsdp_two_ranks(tmp_path, smollm2_tokenizer):
    from test_finetune_cli import _tiny_folder  # same tiny Llama + SmolLM2 tokenizer fixture data

    tokenizer = smollm2_tokenizer
    _tiny_folder(tmp_path / "teacher", tokenizer, 0)
    _tiny_folder(tmp_path / "student", tokenizer, 1, sparsity=0.5)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"Question: {i} + {i} = ?\nAnswer: {2 * i}"}) for i in range(40)))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "sparseft.cli", "finetune", "--fsdp",
           "--student", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"), "--data", str(data),
           "--steps", "3", "--batch-size", "2", "--seqlen", "16", "--logging-steps", "1", "--save-steps", "2",
           "--report-to", "tensorboard", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Resume from the sharded checkpoint of step 2 and run one more step: the masks must survive it.
    resume = [a if a != "3" else "4" for a in cmd] + ["--resume"]
    proc = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    masks = load_masks(tmp_path / "student" / "masks.safetensors")
    final = out
    assert all(torch.equal(masks[n], m) for n, m in load_masks(final / "masks.safetensors").items())
    model = load_model(final)  # a whole (gathered) model, not one rank's shards
    teacher = load_model(tmp_path / "teacher")
    modules = dict(model.named_modules())
    changed = False
    for name, mask in masks.items():
        weight = modules[name].weight
        assert weight.shape == mask.shape and (weight[~mask] == 0).all(), name
        changed |= not torch.equal(weight, dict(teacher.named_modules())[name].weight)
    assert changed
    record = json.loads((final / "stage.json").read_text())
    assert [h["step"] for h in record["log_history"] if "loss_squarehead" in h][-1] == 4  # resumed to step 4
    tags = _tensorboard_tags(tmp_path / "out.checkpoints")
    assert {"train/loss_task", "train/loss_squarehead", "train/loss_kd"} <= tags, tags
