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

**A resend is not rewritten.** When ``<bundle_id>.json`` already holds exactly the new bytes (a resent report,
a replay, a batch redone after a crash), the file is kept as it is: no temporary file, no rename, so no inode
created and none freed. On ext4 without a journal (this VM's root file system) every freed inode is skipped,
one by one, by each file creation in its block group for 60-360 s (``fs/ext4/ialloc.c``, ``recently_deleted``),
which made creations cost up to ~1 ms of system CPU; elsewhere it still saves a create, a rename and an unlink.
Durability is unchanged: the batch's ``syncfs`` (or, without it, an fsync of the kept file) covers the kept
file's data and the directory fsync its name, both before ``flush`` returns, so even a file renamed by a process
that crashed before its directory fsync is durable when the store marks the message published. A corrected
report (other bytes) replaces the earlier file as before. The kept file's mtime does not change (a consumer
watching the folder sees no event for a resend of identical bytes). The comparison reads the existing file
only when its size equals the new body's (``fstat``); a new Bundle costs one failed ``open``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import stat
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from pathlib import Path

from engine.convert import Output
from engine.errors import PermanentError
from engine.sources.base import Envelope

__all__ = [
    "FolderSink", "atomic_write", "fsync_dir", "holds", "remove_stale_tmp", "stale_tmp", "sync_files", "write_batch",
]

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
        _fsync(path)


def _fsync(path: str | Path) -> None:
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


def holds(path: str | Path, data: bytes) -> bool:
    """True when the regular file ``path`` exists and holds exactly ``data`` (read only when the sizes match);
    False when it is missing, a symbolic link, differs or cannot be read (the caller then writes it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
            return False
        held = bytearray()
        while len(held) <= len(data):  # one byte more than expected: a file that grew meanwhile differs
            chunk = os.read(fd, len(data) + 1 - len(held))
            if not chunk:
                break
            held += chunk
        return held == data
    except OSError:
        return False
    finally:
        os.close(fd)


def _write_all(items: Sequence[tuple[str, str, bytes]]) -> list[str]:
    """Write the temporary file of each ``(tmp, target, data)`` whose target does not already hold ``data``;
    returns the targets kept as they are (see the module docstring)."""
    kept: list[str] = []
    for tmp, target, data in items:
        if holds(target, data):
            kept.append(target)
        else:
            _write_tmp(tmp, data)
    return kept


def write_batch(
    directory: Path, files: Sequence[tuple[str, bytes]], *, pool: Executor | None = None, slices: int = 1
) -> int:
    """Write ``(name, data)`` pairs atomically and durably with one data sync and one directory fsync:
    temporary files (created on ``pool`` in ``slices`` parallel slices when given), :func:`sync_files`,
    ``os.replace`` each, fsync the directory. A name whose file already holds ``data`` is kept as it is (no
    temporary file, no rename), and is synced with the rest. On failure no temporary file is left behind and
    the error propagates. Returns how many files were kept."""
    if not files:
        return 0
    base, pid = os.fspath(directory), os.getpid()
    staged = [(f"{base}/{TMP_PREFIX}{name}.{pid}", f"{base}/{name}", data) for name, data in files]
    kept: set[str] = set()
    try:
        if pool is not None and len(staged) > 1 and slices > 1:
            step = -(-len(staged) // slices)
            futures = [pool.submit(_write_all, staged[i : i + step]) for i in range(0, len(staged), step)]
            wait(futures)  # all slices finished before any error propagates (the clean-up below sees every file)
            for future in futures:
                kept.update(future.result())
        else:
            kept.update(_write_all(staged))
        # the kept files too: one written by a process that crashed before its sync is made durable here
        sync_files(directory, [target if target in kept else tmp for tmp, target, _ in staged])
        for tmp, target, _ in staged:
            if target not in kept:
                os.replace(tmp, target)
    except BaseException:
        for tmp, target, _ in staged:
            if target not in kept:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        raise
    fsync_dir(directory)  # also for a batch of kept files only: a kept name may not be durable yet
    return len(kept)


def atomic_write(directory: Path, name: str, data: bytes, *, sync_dir: bool = True) -> Path:
    """Write ``data`` to ``directory/name`` via a fsynced temporary file and ``os.replace``; when the file
    already holds ``data`` it is kept (fsynced instead: no create, no rename; see the module docstring)."""
    target = directory / name
    tmp = directory / f"{TMP_PREFIX}{name}.{os.getpid()}"
    if holds(target, data):
        _fsync(target)
        if sync_dir:
            fsync_dir(directory)
        return target
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
        self.kept = 0  # files that already held their new bytes (resends), kept as they were
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
            self.kept += write_batch(self.path, [(f"{b}.json", body) for b, body in pending.items()],
                                     pool=self._pool, slices=self._threads)  # fmt: skip
        except BaseException:
            self._pending = {**pending, **self._pending}  # retried at the next flush
            raise

    def healthy(self) -> bool:
        return self.path.is_dir() and os.access(self.path, os.W_OK)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pending.clear()
