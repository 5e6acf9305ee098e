"""The message store's writer: one thread, one SQLite connection, *group commit* (:mod:`engine.store`).

Operations (``fn(connection)``) queued by any thread are run by the writer in one transaction with whatever else
is queued (up to ``max_group``), each inside its own savepoint (a failing operation fails only its caller), then
committed once: N concurrent callers share one fsync, and each caller's future resolves only after the commit.
A group whose operations are all non-durable (``durable=False``) commits with ``synchronous=NORMAL``: no fsync of
its own; the next durable commit makes it durable too, because the WAL is written in order. A caller whose future
was cancelled before its turn is skipped. SQLite errors become :class:`engine.errors.TransientError`.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from engine.errors import TransientError

__all__ = ["GroupCommitWriter"]

_Op = tuple[Callable[[sqlite3.Connection], Any], "Future[Any]", bool]  # (operation, result, durable)
_STOP = object()


class GroupCommitWriter:
    """Runs queued operations on ``conn`` in a thread of its own; ``committed`` is notified after each commit."""

    def __init__(self, conn: sqlite3.Connection, name: str, *, max_group: int = 512) -> None:
        self.name = name  # for error messages (the store's path)
        self.committed = threading.Condition()
        self._max_group = max_group
        self._synchronous = "FULL"  # the connection's current PRAGMA synchronous
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, args=(conn,), name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], Any], *, durable: bool = True) -> Future[Any]:
        """Queue ``fn`` for the next group; the future resolves after its commit (fsynced when ``durable``)."""
        future: Future[Any] = Future()
        self._queue.put((fn, future, durable))
        return future

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop and close the connection."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Op] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._commit(conn, batch)
            if stop:
                break
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        # a caller that gave up before its turn (land_async's future cancelled: timeout, listener shutdown) is
        # skipped; from here on its future cannot be cancelled any more
        batch = [op for op in batch if op[1].set_running_or_notify_cancel()]
        if not batch:
            return
        results: list[tuple[bool, Any]] = []
        try:
            # WAL: with synchronous=NORMAL a commit is not fsynced by itself but by the next FULL commit (the WAL
            # is appended in order), so a group of only non-durable operations (mark_mapped) costs no fsync
            synchronous = "FULL" if any(durable for _fn, _future, durable in batch) else "NORMAL"
            if synchronous != self._synchronous:
                conn.execute(f"PRAGMA synchronous={synchronous}")
                self._synchronous = synchronous
            conn.execute("BEGIN IMMEDIATE")
            # a savepoint per operation only when others share the transaction: a lone one that fails rolls back
            # the whole transaction instead (same effect, two statements fewer per commit)
            alone = len(batch) == 1
            for fn, _future, _durable in batch:
                if not alone:
                    conn.execute("SAVEPOINT op")
                try:
                    results.append((True, fn(conn)))
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK" if alone else "ROLLBACK TO op")
                    results.append((False, TransientError(f"message store: {exc}")))
                except Exception as exc:  # a bug in an operation: fail that caller, keep the writer alive
                    conn.execute("ROLLBACK" if alone else "ROLLBACK TO op")
                    results.append((False, exc))
                if not alone:
                    conn.execute("RELEASE op")
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = TransientError(f"message store {self.name}: {exc}")
            for _fn, future, _durable in batch:
                future.set_exception(error)
            return
        for (_fn, future, _durable), (ok, value) in zip(batch, results, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        with self.committed:
            self.committed.notify_all()
