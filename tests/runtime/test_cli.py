"""`sparseft compress` and `sparseft bench` end to end on a tiny saved model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runtime_helpers import tiny_llama

from sparseft.cli import main
from sparseft.runtime import SparseLinear, load_compressed


def test_compress_then_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_llama(0.7)
    model.save_pretrained(tmp_path / "pruned")
    assert main(["compress", str(tmp_path / "pruned"), "--out", str(tmp_path / "c"), "--format", "int8"]) == 0
    assert "compressed 14 layers (int8)" in capsys.readouterr().out
    loaded = load_compressed(tmp_path / "c")
    assert sum(isinstance(m, SparseLinear) and m.fmt == "int8" for m in loaded.modules()) == 14
    ids = torch.tensor([[1, 2, 3]])
    assert loaded.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 6)


def test_compress_refuses_a_dense_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_llama(0.0).save_pretrained(tmp_path / "dense")
    assert main(["compress", str(tmp_path / "dense"), "--out", str(tmp_path / "c")]) == 1
    assert "prune it first" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_bench_small_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "bench",
                "--shape",
                "64x96",
                "--sparsity",
                "0.5",
                "--batch",
                "2",
                "--threads",
                "1",
                "--seconds",
                "0.1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "sparse int8" in out and "dense fp32" in out


def test_bench_bad_shape_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--shape", "big"]) == 1
    assert "--shape must look like 4096x4096" in capsys.readouterr().err
