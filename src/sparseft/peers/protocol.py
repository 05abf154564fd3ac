"""The worker side's loop, shared by every peer worker (copied into no venv: workers import it by path).

A worker script defines `handle(request) -> dict` and calls `serve(handle)`; this reads one JSON request
per line from stdin and writes one reply per line to the real stdout, while anything the peer library
prints goes to stderr. Nothing here imports sparseft or torch: it runs in the peer's own venv.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable


def serve(handle: Callable[[dict], dict]) -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever a library prints must not break the protocol
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
