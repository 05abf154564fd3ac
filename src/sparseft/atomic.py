"""Atomic outputs: a file or folder is either the complete new one, the previous one, or absent.

Everything is written to a temporary sibling (same file system, so the final rename is atomic) that is
moved into place only once complete; on any error the temporary is removed and the old output stays.
Replacing an existing folder moves the old one aside first, then renames the new one in, then deletes
the old one, so no moment exists where the target holds half of either.

    >>> with atomic_folder("runs/pruned") as tmp:
    ...     (tmp / "config.json").write_text("{}")
    >>> atomic_write_text("runs/pruned/stage.json", '{"stage": "prune"}')
    >>> with atomic_file("cache/data.json") as tmp:
    ...     tmp.write_text("[]")
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(out_dir: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """A temporary sibling of `out_dir` to fill; moved onto `out_dir` on success, removed on error."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True or choose another output")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(src: Path, dst: Path) -> None:
    """Move folder `src` onto `dst`: the old `dst` is moved aside, `src` renamed in, then the old deleted."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, old / "previous")
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of the file `path` to write; renamed onto `path` on success, removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)
