"""The peer engines: how each is installed, started on a bench's items and run (see `sparseft.peers`).

Adding an engine: a worker script beside this file (stdlib + the engine's package only, `protocol.serve`),
and an `Engine` whose `start` loads it and registers one `run(i)` per spec in `peers.runs`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparseft.errors import ConfigError
from sparseft.peers.peer_venv import peer_python
from sparseft.peers.worker import WORKERS, PeerWorker

LLAMA_CPP = ("llama-cpp-python==0.3.36", "numpy==2.4.6")
CTRANSLATE2 = ("ctranslate2==4.8.5",)
#: /proc/cpuinfo flag -> the ggml CMake switch of that instruction set (a native build without AMX).
_GGML_ISA = {"avx": "GGML_AVX", "avx2": "GGML_AVX2", "fma": "GGML_FMA", "f16c": "GGML_F16C", "bmi2": "GGML_BMI2",
             "avx_vnni": "GGML_AVX_VNNI", "avx512f": "GGML_AVX512", "avx512vbmi": "GGML_AVX512_VBMI",
             "avx512_vnni": "GGML_AVX512_VNNI", "avx512_bf16": "GGML_AVX512_BF16"}


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def llama_cpp_build_env(flags: set[str] | None = None) -> dict[str, str]:
    """How llama-cpp-python is built here: natively (its default), except on CPUs with AMX, where ggml's
    AMX backend dies with a general protection fault in its first matmul (`ldtilecfg` of a tile config
    the compiler dropped: llama.cpp issue 20824, PR 26954 open) — there every other instruction set of the
    CPU is switched on by name and AMX left out."""
    flags = cpu_flags() if flags is None else flags
    if "amx_int8" not in flags:
        return {}
    switches = ["-DGGML_NATIVE=OFF", *(f"-D{switch}=ON" for flag, switch in _GGML_ISA.items() if flag in flags),
                "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    return {"CMAKE_ARGS": " ".join(switches)}


@dataclass(frozen=True)
class Engine:
    name: str
    kinds: tuple[str, ...]
    describe: str
    start: Callable[..., None]


def _timed(worker: PeerWorker, request: Callable[[int], dict], library: list[float], wrap: Callable) -> Callable:
    """`run(i)`: the worker's reply to request(i), wrapped like a generate() output; `library[i]` keeps the
    best time the worker measured around the library call alone."""

    def run(i: int) -> Any:
        reply = worker("run", **request(i))
        library[i] = min(library[i], reply["seconds"])
        return wrap(i, reply["ids"])

    return run


# ----- llama.cpp ---------------------------------------------------------------------------------------
def gguf_file(files: Path) -> Path:
    """The GGUF of a packaged model folder (or the file itself)."""
    if files.is_file():
        return files
    found = sorted(files.glob("*.gguf"))
    if len(found) != 1:
        raise ConfigError(f"{files} holds {len(found)} .gguf files; pass the one to run with --peer-model")
    return found[0]


def quantized_copy(worker: PeerWorker, src: Path, kind: str, threads: int) -> Path:
    """`src` requantized to `kind` by llama.cpp, made once into the cache (written whole, then renamed)."""
    import os

    from sparseft.models.registry import cache_root

    folder = cache_root() / "peers" / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    stat = src.stat()
    target = folder / f"{src.stem}-{stat.st_size}.{kind.upper()}.gguf"
    if not target.is_file():
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.tmp-{os.getpid()}-", delete=False) as tmp:
            partial = Path(tmp.name)
        try:
            worker("quantize", src=str(src), dst=str(partial), type=kind, threads=threads)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def start_llama_cpp(peers, spec: str, kind: str | None, files: Path, items: Sequence, *, threads: int, **_: Any) -> None:
    import torch

    source = gguf_file(files)
    python = peer_python("llama.cpp", LLAMA_CPP, build_env=llama_cpp_build_env())
    worker = PeerWorker(spec, python, WORKERS / "llamacpp_worker.py", threads)
    peers.workers.append(worker)
    model = quantized_copy(worker, source, kind, threads) if kind else source
    prompts = [item.inputs["input_ids"][0].tolist() for item in items]
    n_ctx = max(len(p) for p in prompts) + max(item.new_tokens or 0 for item in items) + 8
    worker("load", model=str(model), threads=threads, n_ctx=n_ctx)
    peers.info[spec] = {"engine": "llama.cpp", "model_file": str(model), **worker("versions")}
    peers.library_seconds[spec] = [float("inf")] * len(items)
    peers.runs[spec] = _timed(worker, lambda i: {"prompt": prompts[i], "tokens": items[i].new_tokens},
                              peers.library_seconds[spec], lambda i, ids: torch.tensor([prompts[i] + ids]))


# ----- CTranslate2 -------------------------------------------------------------------------------------
def decoder_prompt(tokenizer, generation_config, language: str = "en") -> list[int]:
    """The start tokens HF's Whisper generate uses without timestamps: <|startoftranscript|>, then
    language and task for a multilingual model (transcription of `language`), then <|notimestamps|>."""
    tokens = ["<|startoftranscript|>"]
    if getattr(generation_config, "is_multilingual", False):
        tokens += [f"<|{language}|>", "<|transcribe|>"]
    return tokenizer.convert_tokens_to_ids([*tokens, "<|notimestamps|>"])


def start_ct2(peers, spec: str, kind: str | None, files: Path, items: Sequence, *, threads: int, tokenizer, model,
              **_: Any) -> None:
    import numpy as np
    import torch

    from sparseft.data.examples import speech_processing

    compute = kind or "int8"
    _, text_tokenizer = speech_processing(model.config, tokenizer)
    prompts = [decoder_prompt(text_tokenizer, model.generation_config, item.language) for item in items]
    features = np.concatenate([item.inputs["input_features"].float().numpy() for item in items])
    worker = PeerWorker(spec, peer_python("ctranslate2", CTRANSLATE2), WORKERS / "ct2_worker.py", threads)
    peers.workers.append(worker)
    worker("load", model=str(files), compute_type=compute, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "features.npy", features)
        worker("features", path=str(Path(tmp) / "features.npy"))
    peers.info[spec] = {"engine": "ctranslate2", "compute_type": compute, "model_dir": str(files), **worker("versions")}
    peers.library_seconds[spec] = [float("inf")] * len(items)
    max_length = [len(p) + int(item.options["max_new_tokens"]) for p, item in zip(prompts, items, strict=True)]
    peers.runs[spec] = _timed(worker, lambda i: {"index": i, "prompt": prompts[i], "max_length": max_length[i]},
                              peers.library_seconds[spec], lambda i, ids: torch.tensor([prompts[i] + ids]))


ENGINES = {
    e.name: e
    for e in [
        Engine("llama.cpp", ("causal",), "GGUF models, TYPE a llama.cpp quantization such as Q4_0", start_llama_cpp),
        Engine("ct2", ("speech",), "CTranslate2 Whisper, TYPE a compute type such as int8", start_ct2),
    ]
}
