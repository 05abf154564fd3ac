"""Atomic outputs: a file or folder is either the complete new one, the previous one, or absent.

Everything is written to a temporary sibling (same file system, so the final rename is atomic) that is
moved into place only once complete; on any error the temporary is removed and the old output stays.
Replacing an existing folder moves the old one aside first, then renames the new one in, then deletes
the old one, so no moment exists where the target holds half of either.

An output folder is someone's data until shown otherwise: by default only an empty folder or one that
sparseft wrote (it holds a record, `OUTPUT_MARKERS`) is replaced; anything else, or a file, is refused
unless `overwrite=True`. Temporaries left by killed runs (their process is gone) are removed on the next
write beside them.

    >>> with atomic_folder("runs/pruned") as tmp:
    ...     (tmp / "config.json").write_text("{}")
    >>> atomic_write_text("runs/pruned/stage.json", '{"stage": "prune"}')
    >>> with atomic_file("cache/data.json") as tmp:
    ...     tmp.write_text("[]")
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparseft.errors import ConfigError

#: Files that mark a folder as a sparseft output: a stage record, a compressed checkpoint's metadata.
OUTPUT_MARKERS = ("stage.json", "sparseft.json")
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-")


def check_replaceable(out: Path, overwrite: bool | None = None) -> None:
    """Refuse (ConfigError) to replace `out` unless it is absent, an empty folder, a sparseft output, or
    `overwrite` is True; `overwrite=False` refuses any existing `out`."""
    if not out.exists() and not out.is_symlink():
        return
    if overwrite:
        return
    if overwrite is False:
        raise ConfigError(f"{out} exists; choose another output or pass --overwrite")
    if not out.is_dir():
        raise ConfigError(f"{out} is a file, not an output folder; choose another --out (or --overwrite to replace it)")
    if any(out.iterdir()) and not any((out / m).is_file() for m in OUTPUT_MARKERS):
        raise ConfigError(f"{out} holds files sparseft did not write; choose another --out (or --overwrite to replace it)")


@contextmanager
def atomic_folder(out_dir: str | Path, overwrite: bool | None = None) -> Iterator[Path]:
    """A temporary sibling of `out_dir` to fill; moved onto `out_dir` on success, removed on error.

    `overwrite`: None replaces only an empty folder or a sparseft output, True anything, False nothing."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    try:
        yield tmp
        replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(src: Path, dst: Path) -> None:
    """Move folder `src` onto `dst`: the old `dst` is moved aside, `src` renamed in, then the old deleted."""
    old = None
    if dst.exists() or dst.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-{os.getpid()}-", dir=dst.parent))
        os.replace(dst, old / "previous")
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete the temporaries of `target` (`.NAME.tmp-PID-*`, `.NAME.old-PID-*`) whose process is gone."""
    removed = []
    for entry in target.parent.glob(f".{target.name}.*-*"):
        match = _TEMP.match(entry.name)
        if match and match["name"] == target.name and not _alive(int(match["pid"])):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of the file `path` to write; renamed onto `path` on success, removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
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
