"""kill -9 at several moments of prune, oneshot, compress and finetune: the output is the old one or the
complete new one, never half of either; a killed fine-tune resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sparseft.models import load_model
from tiny_models import build_tiny_model, byte_tokenizer

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive", "HF_HUB_OFFLINE": "1"}


def _command(kind: str, folder, sparsity: float) -> list[str]:
    src, out = str(folder / "dense"), str(folder / "out")
    return {
        "prune": ["prune", src, "--sparsity", str(sparsity), "--out", out],
        "oneshot": ["oneshot", src, "--method", "wanda", "--sparsity", str(sparsity), "--calib", str(folder / "c.txt"),
                    "--nsamples", "4", "--seqlen", "32", "--no-progress", "--out", out],
        "compress": ["compress", str(folder / f"pruned{sparsity}"), "--format", "bf16", "--out", out],
        "finetune": ["finetune", "--student", str(folder / f"pruned{sparsity}"), "--loss", "ce", "--data",
                     str(folder / "c.txt"), "--steps", "6", "--save-steps", "2", "--batch-size", "2", "--seqlen", "16",
                     "--resume", "--out", out],
    }[kind]


def _run(argv, kill_after: float | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sparseft.cli", *argv], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if kill_after is None else subprocess.DEVNULL)
    if kill_after is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (argv, err.decode(errors="replace")[-2000:])
    else:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return time.perf_counter() - start


def _state(out):
    """What is at OUT: None (nothing), or the input and settings its record says it was written from."""
    if not out.exists():
        return None
    record = json.loads((out / "stage.json").read_text())
    load_model(out)  # complete: it loads
    return record["input"], record["settings"]


@pytest.mark.parametrize("kind", ["prune", "oneshot", "compress", "finetune"])
def test_kill_9_leaves_old_or_new_output_whole(kind, tmp_path):
    build_tiny_model("llama", vocab_size=260, max_position_embeddings=256).save_pretrained(tmp_path / "dense")
    byte_tokenizer().save_pretrained(tmp_path / "dense")
    (tmp_path / "c.txt").write_text("\n\n".join(f"{i} apples and {i} pears make {2 * i} fruits." for i in range(60)))
    for s in (0.3, 0.6):
        _run(["prune", str(tmp_path / "dense"), "--sparsity", str(s), "--out", str(tmp_path / f"pruned{s}")])
    _run(_command(kind, tmp_path, 0.3))
    old = _state(tmp_path / "out")
    seconds = _run(_command(kind, tmp_path, 0.6), kill_after=None)  # how long a whole run takes
    new = _state(tmp_path / "out")
    assert new != old
    for fraction in (0.4, 0.7, 0.85, 0.95):
        _run(_command(kind, tmp_path, 0.3 if fraction in (0.4, 0.85) else 0.6), kill_after=fraction * seconds)
        assert _state(tmp_path / "out") in (old, new)  # one of the two, whole
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    _run(_command(kind, tmp_path, 0.3))  # a run after the kills completes, and cleans their temporaries
    assert _state(tmp_path / "out") == old
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")], leftovers
