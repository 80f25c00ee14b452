"""Crash-safe file writes: a reader, or a process started after a `kill -9` or a power cut,
sees a file's old content or its new content, never a mix or an empty file.

The recipe (as in `atomicwrites` or SQLite's journal handling): write a temporary file in
the target's own directory (a rename is atomic only within one file system), flush and
fsync it, `os.replace` it over the target, then fsync the directory so that the rename
itself is on disk once the call returns.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

DEFAULT_FILE_MODE = 0o644


def fsync_directory(directory: Path) -> None:
    """Makes renames into or out of `directory` durable: without it a crash can undo a
    rename even though the renamed file's own data was synced."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_file(path: Path) -> None:
    """Flushes a file written without syncing (e.g. by a library's own save) to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def rename_durably(source: Path, target: Path) -> None:
    """`os.replace(source, target)`, then the directories of both synced."""
    source, target = Path(source), Path(target)
    os.replace(source, target)
    fsync_directory(target.parent)
    if source.parent != target.parent:
        fsync_directory(source.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replaces `path` with `data` atomically and durably (see the module docstring).

    The file keeps the permissions of the one it replaces (else `mode`, default 0644: mkstemp
    would make it 0600). The temporary file is hidden (`.name.*.tmp`) and removed on any
    failure; one left by a killed process is never read, since loaders skip hidden files.
    """
    path = Path(path)
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.exists() else DEFAULT_FILE_MODE
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        rename_durably(Path(temp_name), path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8", mode: int | None = None) -> None:
    """`atomic_write_bytes` of `text` encoded with `encoding`."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode)


__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_directory",
    "fsync_file",
    "rename_durably",
]
