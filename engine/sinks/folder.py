"""Folder sink: one ``<bundle_id>.json`` per output, written atomically, containing exactly ``Output.body``.

``write`` only buffers; ``flush`` writes each buffered body to a dot-prefixed temporary file in the same
directory, fsyncs it, ``os.replace``s it over ``<bundle_id>.json`` and finally fsyncs the directory once,
so a reader never sees a partial file and a crash never leaves a half-written Bundle. Re-publishing the
same report overwrites its file (bundle ids are deterministic), which makes at-least-once delivery
converge to exactly one file per Bundle. ``OSError`` (disk full, permissions) is left to the worker,
which treats it as transient.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from engine.convert import Output
from engine.errors import PermanentError
from engine.sources.base import Envelope

__all__ = ["FolderSink", "atomic_write", "fsync_dir"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
TMP_PREFIX = ".tmp-"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(directory: Path, name: str, data: bytes, *, sync_dir: bool = True) -> Path:
    """Write ``data`` to ``directory/name`` via a fsynced temporary file and ``os.replace``."""
    target = directory / name
    tmp = directory / f"{TMP_PREFIX}{name}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)
    return target


def remove_stale_tmp(directory: Path) -> None:
    """Drop temporary files a crashed process left behind (never visible as outputs)."""
    for leftover in directory.glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


class FolderSink:
    name = "folder"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.path)
        self._pending: dict[str, bytes] = {}

    def write(self, output: Output, envelope: Envelope) -> None:
        if not _SAFE_NAME.match(output.bundle_id):
            raise PermanentError(f"bundle id {output.bundle_id[:80]!r} is not usable as a file name")
        self._pending[output.bundle_id] = output.body

    def flush(self) -> None:
        if not self._pending:
            return
        for bundle_id, body in list(self._pending.items()):
            atomic_write(self.path, f"{bundle_id}.json", body, sync_dir=False)
        fsync_dir(self.path)
        self._pending.clear()

    def healthy(self) -> bool:
        return self.path.is_dir() and os.access(self.path, os.W_OK)

    def close(self) -> None:
        self._pending.clear()
