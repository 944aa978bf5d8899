"""Writing a file so that a crash never leaves it half-written: temp file, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], text: str, *, mode: int = 0o644,
                 sync_dir: bool = False) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new, never a part.

    The temporary file lives next to `path` (same file system, so the rename is atomic) and is
    fsynced before the rename. `sync_dir` also fsyncs the directory, so the rename itself
    survives a power loss (the ledger needs that; most files do not).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        sync_directory(path.parent)


def sync_directory(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that a rename or a new entry in it survives a power loss."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any], *,
                      indent: int = 1, sort_keys: bool = True, sync_dir: bool = False) -> None:
    """`write_atomic` of `data` as JSON (with a final newline)."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n"
    write_atomic(path, text, sync_dir=sync_dir)


__all__ = ["sync_directory", "write_atomic", "write_json_atomic"]
