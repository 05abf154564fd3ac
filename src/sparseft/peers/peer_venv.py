"""Peer engines live in venvs of their own, created once under the cache: never dependencies of sparseft.

    >>> python = peer_python("llama.cpp", ["llama-cpp-python==0.3.36", "numpy==2.4.6"])
    PosixPath('/root/.cache/sparseft/venvs/llama.cpp-<hash>/bin/python')

The folder name carries a hash of the requirements and of the build settings (environment variables of
the install, e.g. llama.cpp's CMAKE_ARGS), so other pins or builds get another venv. A marker file,
written last, says the install finished: a venv without it (an install stopped half-way) is rebuilt.
Only folders under `venvs/` of sparseft's own cache are ever cleared, and only ones it created.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sparseft.errors import SparseftError

log = logging.getLogger(__name__)
READY = "sparseft-venv-ready.txt"


class PeerSetupError(SparseftError):
    """A peer engine's venv could not be created (no network to the package index, a failed build)."""


def venv_dir(name: str, requirements: Sequence[str], build_env: Mapping[str, str] | None = None) -> Path:
    """Where the venv of `name` with exactly these requirements (and build settings) lives."""
    from sparseft.models.registry import cache_root

    keys = sorted(requirements) + [f"{k}={v}" for k, v in sorted((build_env or {}).items())]
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:10]
    return cache_root() / "venvs" / f"{name}-{digest}"


def peer_python(name: str, requirements: Sequence[str], python: str | None = None,
                build_env: Mapping[str, str] | None = None) -> Path:
    """The python of `name`'s venv, created and filled with `requirements` first if needed (minutes when a
    package builds from source, as llama-cpp-python does). `build_env`: environment variables of the
    install; with them pip builds afresh (its wheel cache does not know them)."""
    folder = venv_dir(name, requirements, build_env)
    exe, ready = folder / "bin" / "python", folder / READY
    if ready.is_file() and exe.exists():
        return exe
    log.info("creating the %s venv %s (once; %s)", name, folder, " ".join(requirements))
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([python or sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        if requirements:
            fresh = ["--no-cache-dir"] if build_env else []
            subprocess.run([str(exe), "-m", "pip", "install", "-q", *fresh, *requirements], check=True,
                           env={**os.environ, **(build_env or {})})
    except (subprocess.CalledProcessError, OSError) as err:
        raise PeerSetupError(f"could not install {' '.join(requirements)} for the {name} peer into {folder}: "
                             f"{err}") from None
    ready.write_text("\n".join(requirements) + "\n")
    return exe
