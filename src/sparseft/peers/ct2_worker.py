"""CTranslate2 side of `sparseft bench --peer ct2:int8` and ``benchmarks/whisper_ct2_compare.py``: runs
inside CTranslate2's own venv.

CTranslate2 is never a dependency of sparseft: `sparseft.peers` creates a venv holding only
``ctranslate2`` (and the numpy it brings) and drives this worker over a pipe (`protocol.serve`: one JSON
request per line on stdin, one JSON reply per line on stdout, library output to stderr). The log-mel
features come from the sparseft process (the model's own feature extractor, the same input for every
engine) as a .npy file; transcripts go back as token ids, decoded there with the same tokenizer.
Requests:

    {"cmd": "load", "model": DIR, "compute_type": "int8", "threads": 1}   -> {"load_seconds"}
    {"cmd": "features", "path": "features.npy"}                          -> {"clips"}  (clips, mels, frames)
    {"cmd": "run", "index": i, "prompt": [50257, 50362], "max_length": 448} -> {"ids", "seconds"}
    {"cmd": "versions"} / {"cmd": "quit"}

Nothing here imports sparseft or torch. ``run`` is greedy (beam 1) with CTranslate2's defaults for
Whisper (the model's suppressed tokens, blank suppressed at the start), faster-whisper's settings
without temperature fallback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from protocol import serve  # noqa: E402  (the worker runs as a script in another venv)


class Worker:
    """The loaded model and the features every run reads."""

    def __init__(self) -> None:
        self.model = None
        self.features: np.ndarray | None = None

    def load(self, model: str, compute_type: str, threads: int) -> dict:
        import ctranslate2

        start = time.perf_counter()
        self.model = ctranslate2.models.Whisper(model, device="cpu", compute_type=compute_type,
                                                intra_threads=threads, inter_threads=1)
        return {"load_seconds": time.perf_counter() - start}

    def load_features(self, path: str) -> dict:
        self.features = np.load(path).astype(np.float32)
        return {"clips": int(self.features.shape[0])}

    def run(self, index: int, prompt: list[int], max_length: int) -> dict:
        """One clip, batch 1: encoder + greedy decoding, timed around the library call alone."""
        import ctranslate2

        if self.model is None or self.features is None:
            raise RuntimeError("load the model and the features first")
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(self.features[index : index + 1]))
        start = time.perf_counter()
        result = self.model.generate(features, [prompt], beam_size=1, max_length=max_length)
        seconds = time.perf_counter() - start
        return {"ids": [int(t) for t in result[0].sequences_ids[0]], "seconds": seconds}


def versions() -> dict:
    import ctranslate2

    return {"ctranslate2": ctranslate2.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
            "cpu_compute_types": sorted(ctranslate2.get_supported_compute_types("cpu"))}


WORKER = Worker()


def handle(request: dict) -> dict:
    cmd = request.pop("cmd")
    if cmd == "load":
        return WORKER.load(**request)
    if cmd == "features":
        return WORKER.load_features(**request)
    if cmd == "run":
        return WORKER.run(**request)
    if cmd == "versions":
        return versions()
    raise ValueError(f"unknown command {cmd!r}")


if __name__ == "__main__":
    serve(handle)
