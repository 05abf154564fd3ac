"""Peer engines timed beside sparseft in the same `sparseft bench` run: llama.cpp for text models,
CTranslate2 (faster-whisper's engine) for Whisper. Each runs in a venv of its own (`peer_venv`), driven
over a pipe (`worker`), so neither is ever a dependency of sparseft.

A peer is named `ENGINE[:TYPE]`: `llama.cpp` runs the GGUF as given, `llama.cpp:Q4_0` (Q8_0, F16, F32,
Q4_K_M, ...) a copy requantized once by llama.cpp's own quantizer; `ct2:int8` (int8, float32, ...) is the
CTranslate2 compute type. The peer reads the dense model's own files: a packaged model's GGUF /
CTranslate2 files, or `peer_model`.

    >>> peers = start_peers(["llama.cpp:Q4_0"], "causal", items, source="smollm2-135m", threads=1)
    >>> timing = timed_rounds({**generate_runs(models, items), **peers.runs}, len(items), rounds=3)
    >>> peers.close()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparseft.errors import ConfigError


@dataclass
class Peers:
    """Started peers: `runs[name](i)` runs bench item i; `info[name]` their versions and settings."""

    runs: dict[str, Callable[[int], Any]] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    library_seconds: dict[str, list[float]] = field(default_factory=dict)
    workers: list = field(default_factory=list)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers.clear()


def parse_peer(spec: str) -> tuple[str, str | None]:
    """'llama.cpp:Q4_0' -> ('llama.cpp', 'Q4_0'); 'llama.cpp' -> ('llama.cpp', None)."""
    from sparseft.peers.engines import ENGINES

    engine, _, kind = spec.partition(":")
    if engine not in ENGINES:
        raise ConfigError(f"unknown peer engine {engine!r} in {spec!r}; peers: "
                          + ", ".join(f"{e.name}[:TYPE] ({e.describe})" for e in ENGINES.values()))
    return engine, kind or None


def peer_files(source: str | None, peer_model: str | None, engine: str) -> Path:
    """The files the peer reads: `peer_model`, else the packaged source model's own files."""
    from sparseft.models.registry import PACKAGED_MODELS, packaged_files_dir

    if peer_model is not None:
        path = Path(peer_model)
        if not path.exists():
            raise ConfigError(f"the peer model {peer_model} does not exist")
        return path
    if source in PACKAGED_MODELS:
        return packaged_files_dir(source)
    raise ConfigError(f"the {engine} peer needs the dense model in its own format: {source!r} is not a packaged "
                      f"model, so pass its file with --peer-model (a .gguf for llama.cpp, a CTranslate2 folder for ct2)")


def start_peers(specs: Sequence[str], kind: str, items: Sequence, *, source: str | None, peer_model: str | None = None,
                threads: int, tokenizer=None, model=None) -> Peers:
    """Start one worker per peer spec, loaded and ready to run the bench `items` of a `kind` model."""
    from sparseft.peers.engines import ENGINES

    peers = Peers()
    try:
        for spec in specs:
            engine_name, kind_type = parse_peer(spec)
            engine = ENGINES[engine_name]
            if kind not in engine.kinds:
                raise ConfigError(f"peer {spec!r} runs {' and '.join(engine.kinds)} models, not a {kind} model")
            files = peer_files(source, peer_model, engine_name)
            engine.start(peers, spec, kind_type, files, items, threads=threads, tokenizer=tokenizer, model=model)
    except BaseException:
        peers.close()
        raise
    return peers
