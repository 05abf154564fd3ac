"""The driver side of a peer worker: a process in the peer's venv, one JSON request / reply per line.

    >>> worker = PeerWorker("llama.cpp", python, WORKERS / "llamacpp_worker.py", threads=1)
    >>> worker("load", model="SmolLM2.Q4_0.gguf", threads=1)
    >>> worker("run", index=0)["seconds"]
    >>> worker.close()

A reply {"ok": false, "error": ...} raises PeerError with the peer's message; a worker that dies raises
it too (its stderr goes to ours).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from sparseft.errors import SparseftError

WORKERS = Path(__file__).parent


class PeerError(SparseftError):
    """A peer engine's worker failed or died."""


class PeerWorker:
    """One worker process; `worker(cmd, **fields)` sends a request and returns the reply's fields."""

    def __init__(self, name: str, python: Path, script: Path, threads: int | None) -> None:
        """`threads`: the worker's OMP_NUM_THREADS (None: as in this process, for an engine told by request)."""
        self.name = name
        env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        env.pop("PYTHONPATH", None)  # the worker sees only its own venv
        self.proc = subprocess.Popen([str(python), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=None, text=True, bufsize=1, env=env)  # fmt: skip

    def __call__(self, cmd: str, **fields: object) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise PeerError(f"the {self.name} worker is gone (see its messages above)") from None
        line = self.proc.stdout.readline()
        if not line:
            raise PeerError(f"the {self.name} worker died during {cmd!r} (see its messages above)")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise PeerError(f"{self.name}: {cmd} failed: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
