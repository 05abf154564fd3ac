"""A compressed checkpoint is untrusted input: every crafted class is refused with a CheckpointError that
names the layer or the check, before any kernel reads it; random damage never crashes, hangs or NaNs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from crafted import ATTACKS, DELTA_LAYER, LAYER, crafted_copy, edit_tensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_helpers import tiny_llama

from sparseft.errors import CheckpointError, SparseftError
from sparseft.runtime import SparseLinear, load_compressed, save_compressed, sparsify_model

IDS = torch.tensor([[5, 6, 7, 8, 9]])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    model = tiny_llama(0.7)
    model.model.layers[1].mlp.down_proj = SparseLinear.from_dense(model.model.layers[1].mlp.down_proj, "fp32",
                                                                  index="delta")  # a delta-index layer too
    sparsify_model(model, "int8")  # the other pruned layers
    out = save_compressed(model, tmp_path_factory.mktemp("ck") / "model")
    with torch.no_grad():
        return out, model(IDS).logits


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_each_crafted_class_is_refused_clearly(checkpoint, tmp_path, attack):
    folder = crafted_copy(checkpoint[0], tmp_path / "bad", attack)
    with pytest.raises(CheckpointError, match=None) as info:
        load_compressed(folder)
    assert ATTACKS[attack][1] in str(info.value), str(info.value)


def test_crafted_checkpoints_never_crash_a_process(checkpoint, tmp_path):
    """All classes, loaded and run in a child process: a signal (SIGSEGV) there fails this test."""
    folders = [str(crafted_copy(checkpoint[0], tmp_path / f"c{i}", a)) for i, a in enumerate(ATTACKS)]
    script = (
        "import sys, json, torch\n"
        "from sparseft.models import load_model\n"
        "from sparseft.errors import SparseftError\n"
        "out = []\n"
        "for folder in sys.argv[1:]:\n"
        "    try:\n"
        "        logits = load_model(folder)(torch.tensor([[5, 6, 7, 8, 9]])).logits\n"
        "        out.append('ok' if bool(torch.isfinite(logits).all()) else 'nan')\n"
        "    except SparseftError:\n"
        "        out.append('refused')\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, *folders], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["refused"] * len(ATTACKS)


PARTS = ["rowptr", "mask", "values", "scales"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layer=st.sampled_from([LAYER, DELTA_LAYER]), part=st.sampled_from(PARTS),
       position=st.floats(0, 1), value=st.one_of(st.integers(-(2**62), 2**62),
                                               st.floats(allow_nan=True, allow_infinity=True)))
def test_fuzzed_tensors_load_correctly_or_are_refused(checkpoint, tmp_path_factory, layer, part, position, value):
    source, expected = checkpoint
    folder = tmp_path_factory.mktemp("fuzz") / "m"
    import shutil

    shutil.copytree(source, folder)

    def damage(state):
        t = state[f"{layer}.{part}"]
        if t.numel() == 0:
            return
        flat = t.view(-1)
        i = min(int(position * flat.numel()), flat.numel() - 1)
        if t.dtype.is_floating_point:
            flat[i] = torch.tensor(value, dtype=torch.float64).to(t.dtype)  # beyond its range: inf
        else:  # integers: the value clamped into the dtype's range (NaN/inf: the range's ends)
            info = torch.iinfo(t.dtype)
            number = value if value == value else 0
            flat[i] = int(max(min(number, info.max), info.min)) if abs(number) != float("inf") else info.max

    edit_tensors(folder, damage)
    try:
        model = load_compressed(folder)
    except SparseftError:
        return  # refused clearly: fine
    with torch.no_grad():
        logits = model(IDS).logits
    assert bool(torch.isfinite(logits).all())  # accepted: a valid (maybe different) model, computed soundly
    if part == "rowptr":  # row pointers can only pass validation unchanged
        torch.testing.assert_close(logits, expected)


def test_the_untouched_checkpoint_loads(checkpoint):
    source, expected = checkpoint
    with torch.no_grad():
        torch.testing.assert_close(load_compressed(source)(IDS).logits, expected)
    assert json.loads((source / "sparseft.json").read_text())["layers"][DELTA_LAYER]["index"] == "delta"
