"""Crafted compressed checkpoints: each attack of a class applied to a real small checkpoint, with the
checksums recomputed (an attacker recomputes them as easily as we do), for the untrusted-input tests."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LAYER = "model.layers.0.mlp.up_proj"
DELTA_LAYER = "model.layers.1.mlp.down_proj"


def resign(folder: Path) -> None:
    """Recompute the size and sha256 that sparseft.json records for each file."""
    meta = json.loads((folder / "sparseft.json").read_text())
    for name in meta.get("files", {}):
        data = (folder / name).read_bytes()
        meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "sparseft.json").write_text(json.dumps(meta))


def edit_tensors(folder: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    resign(folder)


def edit_meta(folder: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((folder / "sparseft.json").read_text())
    change(meta)
    (folder / "sparseft.json").write_text(json.dumps(meta))


def _set(name: str, index, value) -> Callable[[dict], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        state[name][index] = value
    return change


def _more_bits(state):
    words = state[f"{LAYER}.mask"]
    words[0, 0] = -1  # all 64 bits of row 0's first word: more columns than row 0 stores values


def _big_gap(state):
    gaps = state[f"{DELTA_LAYER}.mask"]
    gaps[:-64] = 255  # every step skips 255 columns: far past the row's end


def _layer(field, value):
    return lambda meta: meta["layers"][LAYER].__setitem__(field, value)


#: name -> (how to damage a copy, words the error must contain)
ATTACKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "rowptr huge": (lambda f: edit_tensors(f, _set(f"{LAYER}.rowptr", -1, 2**40)), LAYER),
    "rowptr negative": (lambda f: edit_tensors(f, _set(f"{LAYER}.rowptr", 1, -5)), LAYER),
    "rowptr shifted": (lambda f: edit_tensors(f, _set(f"{LAYER}.rowptr", 0, 3)), LAYER),
    "popcount above stored values": (lambda f: edit_tensors(f, _more_bits), "bitmask"),
    "delta gaps past K": (lambda f: edit_tensors(f, _big_gap), "delta index"),
    "NaN int8 scale": (lambda f: edit_tensors(f, _set(f"{LAYER}.scales", 0, float("nan"))), "NaN"),
    "zero int8 scale": (lambda f: edit_tensors(f, _set(f"{LAYER}.scales", 0, 0.0)), "positive"),
    "NaN in a dense weight": (lambda f: edit_tensors(f, _set("model.embed_tokens.weight", (0, 0), float("nan"))), "NaN"),
    "nnz 4e9 in JSON": (lambda f: edit_meta(f, _layer("nnz", 4 * 10**9)), LAYER),
    "shape 1e6 x 1e6 in JSON": (lambda f: edit_meta(f, _layer("shape", [10**6, 10**6])), LAYER),
    "unknown format": (lambda f: edit_meta(f, _layer("fmt", "int3")), LAYER),
    "layer missing from the file": (lambda f: edit_meta(f, lambda m: m["layers"].__setitem__(
        "model.layers.0.mlp.gate_proj.extra", dict(m["layers"][LAYER]))), "no such layer"),
    "layer missing from the record": (lambda f: edit_meta(f, lambda m: m["layers"].pop(LAYER)), "unexpected"),
    "truncated sparseft.json": (lambda f: (f / "sparseft.json").write_text((f / "sparseft.json").read_text()[:40]),
                                "not valid JSON"),
    "empty files record": (lambda f: edit_meta(f, lambda m: m.__setitem__("files", {})), "files"),
    "huge config": (lambda f: (f / "config.json").write_text(json.dumps(
        {**json.loads((f / "config.json").read_text()), "vocab_size": 10**9})), "config.json"),
}


def crafted_copy(source: Path, target: Path, attack: str) -> Path:
    shutil.copytree(source, target)
    ATTACKS[attack][0](target)
    return target
