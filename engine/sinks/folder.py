"""Folder sink: one ``<bundle_id>.json`` per output, written atomically, containing exactly ``Output.body``.

``write`` only buffers; ``flush`` makes the whole batch durable with one sync instead of one fsync per file:
it writes each buffered body to a dot-prefixed temporary file in the same directory (no fsync; created on a
small thread pool, since file creation is I/O latency), makes all of them durable at once with ``syncfs(2)``
on the directory's file system (:func:`sync_files`), then ``os.replace``s each over ``<bundle_id>.json``
and fsyncs the directory once. Data is durable before any rename, so a reader never sees a partial file and
a crash never leaves a half-written Bundle; ``flush`` returns (and the store marks the batch published)
only after the directory fsync. ``syncfs`` flushes every dirty page of that file system, so put the outbox
on a volume of its own when other heavy writers share the disk; where ``syncfs`` is missing, each file is
fsynced. Re-publishing the same report overwrites its file (bundle ids are deterministic), which makes
at-least-once delivery converge to exactly one file per Bundle. ``OSError`` (disk full, permissions) is
left to the worker, which treats it as transient.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from engine.convert import Output
from engine.errors import PermanentError
from engine.sources.base import Envelope

__all__ = ["FolderSink", "atomic_write", "fsync_dir", "remove_stale_tmp", "stale_tmp", "sync_files", "write_batch"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
TMP_PREFIX = ".tmp-"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> object | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return getattr(libc, "syncfs", None)
    except OSError:
        return None


_SYNCFS = _load_syncfs()


def sync_files(directory: Path, paths: Sequence[str | Path]) -> None:
    """Make the data of ``paths`` (files in ``directory``) durable: one ``syncfs(2)`` for the batch, or an
    fsync per file where ``syncfs`` is unavailable."""
    if not paths:
        return
    if _SYNCFS is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:  # type: ignore[operator]
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(directory))
        finally:
            os.close(fd)
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_tmp(tmp: str | Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` to the temporary file ``tmp``; ``sync``: fsync it before closing."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(items: Sequence[tuple[str, str, bytes]]) -> None:
    for tmp, _, data in items:
        _write_tmp(tmp, data)


def write_batch(
    directory: Path, files: Sequence[tuple[str, bytes]], *, pool: Executor | None = None, slices: int = 1
) -> None:
    """Write ``(name, data)`` pairs atomically and durably with one data sync and one directory fsync:
    temporary files (created on ``pool`` in ``slices`` parallel slices when given), :func:`sync_files`,
    ``os.replace`` each, fsync the directory. On failure no temporary file is left behind and the error
    propagates."""
    if not files:
        return
    base, pid = os.fspath(directory), os.getpid()
    staged = [(f"{base}/{TMP_PREFIX}{name}.{pid}", f"{base}/{name}", data) for name, data in files]
    try:
        if pool is not None and len(staged) > 1 and slices > 1:
            step = -(-len(staged) // slices)
            for future in [pool.submit(_write_all, staged[i : i + step]) for i in range(0, len(staged), step)]:
                future.result()
        else:
            _write_all(staged)
        sync_files(directory, [tmp for tmp, _, _ in staged])
        for tmp, target, _ in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    fsync_dir(directory)


def atomic_write(directory: Path, name: str, data: bytes, *, sync_dir: bool = True) -> Path:
    """Write ``data`` to ``directory/name`` via a fsynced temporary file and ``os.replace``."""
    target = directory / name
    tmp = directory / f"{TMP_PREFIX}{name}.{os.getpid()}"
    try:
        _write_tmp(tmp, data, sync=True)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)
    return target


def stale_tmp(directory: Path) -> list[str]:
    """Names of the temporary files in ``directory``, read with a streaming ``os.scandir`` (an outbox holds
    millions of Bundles: ``Path.glob`` would list every entry in memory first)."""
    with os.scandir(directory) as entries:
        return [e.name for e in entries if e.name.startswith(TMP_PREFIX)]


def remove_stale_tmp(directory: Path) -> None:
    """Drop temporary files a crashed process left behind (never visible as outputs)."""
    for name in stale_tmp(directory):
        with contextlib.suppress(OSError):
            os.unlink(directory / name)


class FolderSink:
    """``write`` buffers; ``flush`` writes the batch with :func:`write_batch` (temporary files created on a small
    thread pool: file creation is I/O latency that overlaps; one sync; renames; one directory fsync)."""

    name = "folder"
    concurrent_flush = True  # ``write`` may run while ``flush`` writes the previous batch (backfill)

    def __init__(self, path: str | Path, *, threads: int = 4) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.path)
        self._pending: dict[str, bytes] = {}
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="folder-sink") if threads else None

    def write(self, output: Output, envelope: Envelope) -> None:
        if not _SAFE_NAME.match(output.bundle_id):
            raise PermanentError(f"bundle id {output.bundle_id[:80]!r} is not usable as a file name")
        self._pending[output.bundle_id] = output.body

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}  # writes made meanwhile go to the next batch
        try:
            write_batch(self.path, [(f"{b}.json", body) for b, body in pending.items()], pool=self._pool,
                        slices=self._threads)  # fmt: skip
        except BaseException:
            self._pending = {**pending, **self._pending}  # retried at the next flush
            raise

    def healthy(self) -> bool:
        return self.path.is_dir() and os.access(self.path, os.W_OK)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pending.clear()
