"""Jane Austen's six novels from Debian's `r-cran-janeaustenr`, read without R.

The package stores each novel as an R character vector (one element per line of text) in R's lazy-load
format: `Rdata.rdx` is a gzip'd, XDR-serialized index (name -> [offset, length] into `Rdata.rdb`), and
each entry of `Rdata.rdb` is a 4-byte big-endian length followed by a zlib stream of one XDR-serialized
object. This module reads just enough of R's serialization (vectors, pairlists, symbols, references)
for those two files; anything else raises `SparseftError` instead of guessing.

    >>> novels = austen_novels()
    >>> sorted(novels)[:2]
    ['emma', 'mansfieldpark']
    >>> paragraphs(novels["persuasion"])[0]
    'Persuasion'
"""

from __future__ import annotations

import gzip
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from sparseft.errors import SparseftError

AUSTEN_DIR = Path("/usr/lib/R/site-library/janeaustenr/data")
NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")

# R SEXP type codes used by these files (R Internals, "Serialization formats").
NILVALUE, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 254, 1, 2, 9, 10, 13, 14, 16, 19
REFSXP = 255
HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10


class _XDR:
    """A cursor over one XDR-serialized R object."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.refs = data, 0, []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise SparseftError("janeaustenr data ends early: the package files are damaged")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def object(self) -> Any:
        if self.take(2) != b"X\n":
            raise SparseftError("janeaustenr data is not in R's XDR serialization")
        version = self.int()
        self.take(8)  # the R versions that wrote and can read it
        if version == 3:
            self.take(self.int())  # native encoding name
        return self.item()

    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        if kind == NILVALUE:
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == SYMSXP:
            self.refs.append(self.item())
            return self.refs[-1]
        if kind == LISTSXP:
            return self._pairlist(flags)
        if kind == CHARSXP:
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8", errors="replace")
        value = self._vector(kind)
        if flags & HAS_ATTR:  # a named vector becomes a dict; other attributes are not needed here
            names = dict(self.item()).get("names")
            if names is not None:
                return dict(zip(names, value, strict=True))
        return value

    def _vector(self, kind: int) -> list:
        n = self.int()
        if kind in (STRSXP, VECSXP):
            return [self.item() for _ in range(n)]
        if kind in (LGLSXP, INTSXP):
            return list(struct.unpack(f">{n}i", self.take(4 * n)))
        if kind == REALSXP:
            return list(struct.unpack(f">{n}d", self.take(8 * n)))
        raise SparseftError(f"janeaustenr data holds an R object of type {kind}, which this reader does not know")

    def _pairlist(self, flags: int) -> list[tuple[Any, Any]]:
        if flags & HAS_ATTR:
            self.item()
        tag = self.item() if flags & HAS_TAG else None
        head = (tag, self.item())
        rest = self.item()
        return [head, *(rest or [])]


def _index(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (offset, length) of each object in Rdata.rdb."""
    index = _XDR(gzip.decompress((folder / "Rdata.rdx").read_bytes())).object()
    return {name: (int(v[0]), int(v[1])) for name, v in index["variables"].items()}


@lru_cache(maxsize=1)
def austen_novels(folder: Path = AUSTEN_DIR) -> dict[str, list[str]]:
    """Each novel's lines (its R character vector), by the package's names (`NOVELS`)."""
    if not (folder / "Rdata.rdx").is_file():
        raise SparseftError(f"{folder} not found: install the Debian package r-cran-janeaustenr")
    blob = (folder / "Rdata.rdb").read_bytes()
    novels = {}
    for name, (offset, length) in _index(folder).items():
        chunk = blob[offset : offset + length]
        novels[name] = [line or "" for line in _XDR(zlib.decompress(chunk[4:])).object()]
    missing = set(NOVELS) - set(novels)
    if missing:
        raise SparseftError(f"janeaustenr data lacks {sorted(missing)}")
    return novels


def paragraphs(lines: list[str]) -> list[str]:
    """Lines joined into paragraphs (blank lines separate them), whitespace normalised."""
    out, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(" ".join(current))
            current = []
    return out
