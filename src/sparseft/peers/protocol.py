"""The worker side's loop, shared by every peer worker (copied into no venv: workers import it by path).

A worker script defines `handle(request) -> dict` and calls `serve(handle)`; this reads one JSON request
per line from stdin and writes one reply per line to the real stdout, while anything the peer library
prints (Python or C) goes to stderr. Nothing here imports sparseft or torch: it runs in the peer's own venv.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable


def serve(handle: Callable[[dict], dict]) -> None:
    # Replies go to a copy of file descriptor 1; fd 1 itself and sys.stdout then point at stderr, so that
    # whatever a library prints, from Python or from C, cannot break the protocol.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("cmd") == "quit":
            break
        try:
            reply = {"ok": True, **handle(request)}
        except Exception as err:  # noqa: BLE001  (reported to the driver, which stops)
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
