"""llama.cpp side of `sparseft bench --peer llama.cpp:TYPE`: runs inside llama-cpp-python's own venv.

Started by `sparseft.peers.llamacpp` and driven over a pipe (`protocol.serve`). Nothing here imports
sparseft or torch. Requests:

    {"cmd": "quantize", "src": IN.gguf, "dst": OUT.gguf, "type": "Q4_0", "threads": 1}  -> {"seconds"}
    {"cmd": "load", "model": X.gguf, "threads": 1, "n_ctx": 256}                      -> {"load_seconds", "n_vocab"}
    {"cmd": "run", "prompt": [ids], "tokens": 64}   -> {"ids", "seconds", "prefill_seconds"}
    {"cmd": "versions"}

`run` is greedy decoding of exactly `tokens` new tokens (EOS does not stop it, as sparseft bench forces
its length): the prompt in one batch, then one token per call, the next token the argmax of the logits.
`quantize` is llama.cpp's own quantizer with its default mixes (requantizing a quantized input allowed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from protocol import serve  # noqa: E402  (the worker runs as a script in another venv)

STATE: dict = {}


def _ftype(name: str) -> int:
    import llama_cpp

    attr = "LLAMA_FTYPE_ALL_F32" if name.upper() == "F32" else f"LLAMA_FTYPE_MOSTLY_{name.upper()}"
    if not hasattr(llama_cpp, attr):
        known = sorted(a.removeprefix("LLAMA_FTYPE_MOSTLY_") for a in dir(llama_cpp) if a.startswith("LLAMA_FTYPE_MOSTLY_"))
        raise ValueError(f"llama.cpp has no quantization type {name!r}; it has F32, {', '.join(known)}")
    return getattr(llama_cpp, attr)


def quantize(src: str, dst: str, type: str, threads: int) -> dict:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(type)
    params.nthread = threads
    params.allow_requantize = True
    start = time.perf_counter()
    status = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {type}) returned {status}")
    return {"seconds": time.perf_counter() - start}


def load(model: str, threads: int, n_ctx: int) -> dict:
    from llama_cpp import Llama

    start = time.perf_counter()
    STATE["llm"] = Llama(model_path=model, n_ctx=n_ctx, n_batch=min(512, n_ctx), n_threads=threads,
                         n_threads_batch=threads, logits_all=False, verbose=False)
    return {"load_seconds": time.perf_counter() - start, "n_vocab": STATE["llm"].n_vocab()}


def run(prompt: list[int], tokens: int) -> dict:
    llm = STATE["llm"]
    start = time.perf_counter()
    llm.reset()
    llm.eval(prompt)
    prefill = time.perf_counter() - start
    n_vocab = llm.n_vocab()
    out: list[int] = []
    for _ in range(tokens):
        # the last position's logits, straight from the context (Llama.scores is filled only with logits_all)
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        token = int(np.argmax(logits))
        out.append(token)
        if len(out) < tokens:
            llm.eval([token])
    return {"ids": out, "seconds": time.perf_counter() - start, "prefill_seconds": prefill}


def versions() -> dict:
    import llama_cpp

    return {"llama_cpp_python": llama_cpp.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
            "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}


COMMANDS = {"quantize": quantize, "load": load, "run": run, "versions": lambda: versions()}


def handle(request: dict) -> dict:
    cmd = request.pop("cmd")
    if cmd not in COMMANDS:
        raise ValueError(f"unknown command {cmd!r}")
    return COMMANDS[cmd](**request)


if __name__ == "__main__":
    serve(handle)
