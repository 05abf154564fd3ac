"""Write one safetensors file tensor by tensor, in any order, never holding all tensors in memory.

The header (names, dtypes, shapes, offsets) is fixed up front, the file is sized at once, and each
tensor is written at its offset when it is ready. A file still being written is already readable
(`safe_open`) for the tensors written so far, which is how the streamed one-shot reads back the
pruned encoder while it captures the decoder's inputs.

    >>> layout = {"a": (torch.float32, (2, 3)), "b": (torch.bool, (4,))}
    >>> with SafetensorsWriter("out.safetensors", layout) as writer:
    ...     writer.write("b", torch.ones(4, dtype=torch.bool))
    ...     writer.write("a", torch.zeros(2, 3))
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from sparseft.errors import CheckpointError

#: safetensors' names for torch dtypes.
DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_MAX_WRITE = 1 << 30  # Linux writes at most ~2 GiB per call; stay well below


class SafetensorsWriter:
    """A safetensors file with a fixed `layout` (name -> (dtype, shape)) whose tensors arrive one by one.

    Data lies in `layout` order. `close()` fails if a tensor was never written, so a half-filled file
    cannot pass for a finished one.
    """

    def __init__(self, path: str | Path, layout: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self._spans: dict[str, tuple[int, int, torch.dtype, tuple[int, ...]]] = {}
        header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for name, (dtype, shape) in layout.items():
            if dtype not in DTYPE_NAMES:
                raise CheckpointError(f"cannot write {name}: dtype {dtype} has no safetensors name")
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._spans[name] = (offset, size, dtype, tuple(shape))
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors itself writes it
        self._data_start = 8 + len(text)
        self._missing = set(self._spans)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(self._fd, struct.pack("<Q", len(text)) + text, 0)
        os.ftruncate(self._fd, self._data_start + offset)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write `tensor` (same dtype and shape as announced) at its place in the file."""
        if name not in self._spans:
            raise CheckpointError(f"{self.path.name}: {name} is not in the announced layout")
        offset, size, dtype, shape = self._spans[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"{self.path.name}: {name} was announced as {dtype} {shape}, got {tensor.dtype} {tuple(tensor.shape)}"
            )
        data = memoryview(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
        position = self._data_start + offset
        while data:
            written = os.pwrite(self._fd, data[:_MAX_WRITE], position)
            data, position = data[written:], position + written
        self._missing.discard(name)

    def close(self) -> None:
        """Flush and close; raise if any announced tensor was not written."""
        if self._fd < 0:
            return
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if self._missing:
            raise CheckpointError(f"{self.path.name}: {len(self._missing)} tensors never written, e.g. "
                                  f"{sorted(self._missing)[:3]}")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._fd >= 0:  # the caller's error wins; the half-written file is discarded with its folder
            os.close(self._fd)
            self._fd = -1
