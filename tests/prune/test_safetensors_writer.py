"""The incremental safetensors writer against safetensors' own reader."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sparseft.errors import CheckpointError
from sparseft.models.safetensors_writer import SafetensorsWriter


def test_tensors_written_in_any_order_read_back_exactly(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "mask": torch.rand(7, 3) > 0.5,
        "half": torch.randn(4).bfloat16(),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "view": torch.randn(6, 4).t(),  # not contiguous
    }
    path = tmp_path / "t.safetensors"
    with SafetensorsWriter(path, {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}) as writer:
        for name in reversed(list(tensors)):
            writer.write(name, tensors[name])
            with safe_open(path, framework="pt") as f:  # readable while still being written
                assert torch.equal(f.get_tensor(name), tensors[name])
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys()
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in tensors.items())
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_wrong_or_missing_tensors_are_refused(tmp_path):
    writer = SafetensorsWriter(tmp_path / "t.safetensors", {"a": (torch.float32, (2,)), "b": (torch.bool, (3,))})
    with pytest.raises(CheckpointError, match="announced as"):
        writer.write("a", torch.zeros(3))
    with pytest.raises(CheckpointError, match="not in the announced layout"):
        writer.write("c", torch.zeros(2))
    writer.write("a", torch.zeros(2))
    with pytest.raises(CheckpointError, match="1 tensors never written"):
        writer.close()
