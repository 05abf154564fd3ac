"""Compressed checkpoints: round trip, size, and clear errors on damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runtime_helpers import tiny_llama

from sparseft.errors import CheckpointError
from sparseft.runtime import SparseLinear, load_compressed, save_compressed, sparsify_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor, Path]:
    model = tiny_llama(0.7)
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(3))
    ref = model.generate(ids, max_new_tokens=16, do_sample=False)
    dense_dir = tmp_path_factory.mktemp("dense")
    model.save_pretrained(dense_dir)
    sparsify_model(model, "fp32")
    out = save_compressed(model, tmp_path_factory.mktemp("ck") / "model")
    return out, ids, ref, dense_dir


def test_round_trip_generates_same_tokens(saved) -> None:
    out, ids, ref, _ = saved
    model = load_compressed(out)
    assert sum(isinstance(m, SparseLinear) for m in model.modules()) == 14
    assert torch.equal(model.generate(ids, max_new_tokens=16, do_sample=False), ref)


def test_compressed_is_at_least_2x_smaller_than_dense_fp32(saved) -> None:
    out, _, _, dense_dir = saved
    dense = (dense_dir / "model.safetensors").stat().st_size
    sparse = (out / "model.safetensors").stat().st_size
    assert dense / sparse >= 2.0, f"dense {dense} B vs compressed {sparse} B"


def test_save_replaces_existing_folder(saved, tmp_path: Path) -> None:
    out, *_ = saved
    model = load_compressed(out)
    target = tmp_path / "m"
    save_compressed(model, target)
    save_compressed(model, target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                         "sparseft.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folders left behind


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_file_is_reported(saved, tmp_path: Path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_compressed(bad)


def test_altered_byte_is_reported(saved, tmp_path: Path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="altered"):
        load_compressed(bad)


def test_config_that_does_not_fit_is_reported(saved, tmp_path: Path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    meta = json.loads((bad / "sparseft.json").read_text())
    meta["layers"]["model.layers.0.mlp.up_proj"]["nnz"] += 1
    (bad / "sparseft.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="model.layers.0.mlp.up_proj: values should be"):
        load_compressed(bad)


def test_missing_metadata_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="sparseft.json is missing"):
        load_compressed(tmp_path)


def test_delta_index_round_trip(tmp_path: Path) -> None:
    model = tiny_llama(0.97)
    ids = torch.tensor([[5, 6, 7, 8]])
    ref = model(ids).logits
    sparsify_model(model, "fp32", index="delta")
    assert {m.index for m in model.modules() if isinstance(m, SparseLinear)} == {"delta"}
    loaded = load_compressed(save_compressed(model, tmp_path / "d"))
    assert {m.index for m in loaded.modules() if isinstance(m, SparseLinear)} == {"delta"}
    torch.testing.assert_close(loaded(ids).logits, ref, rtol=1e-4, atol=1e-4)


def test_fp16_round_trip(tmp_path: Path) -> None:
    model = tiny_llama(0.7)
    ids = torch.tensor([[5, 6, 7, 8]])
    sparsify_model(model, "fp16")
    before = model(ids).logits
    loaded = load_compressed(save_compressed(model, tmp_path / "h"))
    layers = [m for m in loaded.modules() if isinstance(m, SparseLinear)]
    assert len(layers) == 14 and {m.values.dtype for m in layers} == {torch.float16}
    assert torch.equal(loaded(ids).logits, before)


def test_unknown_value_format_is_reported(saved, tmp_path: Path) -> None:
    bad = _copy(saved[0], tmp_path / "bad")
    meta = json.loads((bad / "sparseft.json").read_text())
    meta["layers"]["model.layers.0.mlp.up_proj"]["fmt"] = "int3"
    (bad / "sparseft.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="up_proj: unknown weight format 'int3'"):
        load_compressed(bad)


def test_inconsistent_row_pointers_are_reported(saved, tmp_path: Path) -> None:
    """A file whose sizes fit but whose rowptr points past the values (the kernels would read out of
    bounds) is refused, even with a matching checksum."""
    from safetensors.torch import load_file, save_file

    from sparseft.runtime.checkpoint import _sha256

    bad = _copy(saved[0], tmp_path / "bad")
    weights = bad / "model.safetensors"
    state = load_file(str(weights))
    state["model.layers.0.mlp.up_proj.rowptr"][-1] += 1000
    save_file(state, str(weights), metadata={"format": "pt"})
    meta = json.loads((bad / "sparseft.json").read_text())
    meta["files"]["model.safetensors"] = {"bytes": weights.stat().st_size, "sha256": _sha256(weights)}
    (bad / "sparseft.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="inconsistent"):
        load_compressed(bad)
