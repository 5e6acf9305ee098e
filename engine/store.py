"""Embedded durable landing and message store: one SQLite file in WAL mode with ``synchronous=FULL``.

* :meth:`MessageStore.land` (the :class:`engine.sources.base.Landing` protocol) returns only after the
  transaction holding the raw bytes is committed and the WAL is fsynced. Concurrent landers (the MLLP
  asyncio thread, pynetdicom's association threads, the inbox) share one writer thread that commits
  whatever is queued in one transaction (*group commit*): every caller still waits for its own fsync,
  but N concurrent callers pay for one. When the write fails, ``land`` raises
  :class:`engine.errors.TransientError` so that the transport answers ``AE`` / ``0xA700``.
* :class:`StoreSource` (the :class:`engine.sources.base.Source` protocol) hands the worker every
  message whose status is ``received`` or ``mapped`` in id order, skipping the ones already handed out
  and not yet acknowledged. Because the status lives in the file, unfinished messages are resumed
  after a crash or restart simply by polling again.
* Status per message: ``received`` (landed) -> ``mapped`` (converted, outputs being published) ->
  ``published`` (every output confirmed) or ``failed`` (at least one part went to the dead letters) or
  ``filtered`` (nothing to convert: not a report; ``error_class`` holds the category, ``error_reason``
  the reason; no dead letter).
  ``engine replay`` sets rows back to ``received`` (``replays`` + 1); ``engine status`` counts them.

Stored per message: the original bytes, source name, content type, PHI-free headers (JSON), received
and updated timestamps (epoch seconds), attempts, error class and one-line reason, and the ids of
the Bundles it produced. Schema version 2 adds PHI-free search keys filled at landing by
:mod:`engine.message_index` (``message_type``, ``control_id`` columns, ``message_accessions`` of accession
hashes), ``message_events`` (a trigger records every status / attempts / replays change: the history the
console shows) and the console's ``audit_log``; :func:`engine.store_schema.migrate` adds them to older files.
Retention (pruning published rows, vacuuming) is out of scope for now: the
file grows until an operator prunes it; see the README.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import TransientError
from engine.message_index import IndexKeys, MessageIndexer
from engine.sources.base import Envelope
from engine.store_schema import migrate

__all__ = [
    "FAILED",
    "FILTERED",
    "MAPPED",
    "PUBLISHED",
    "RECEIVED",
    "STATUSES",
    "MessageStore",
    "Outcome",
    "StoreSource",
    "StoredMessage",
]

RECEIVED, MAPPED, PUBLISHED, FAILED = "received", "mapped", "published", "failed"
FILTERED = "filtered"  # not a report (lab ORU, ADT, non-report DICOM): reason + category kept, no dead letter
STATUSES = (RECEIVED, MAPPED, PUBLISHED, FAILED, FILTERED)
UNFINISHED = (RECEIVED, MAPPED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    content_type TEXT NOT NULL,
    headers TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    replays INTEGER NOT NULL DEFAULT 0,
    error_class TEXT,
    error_reason TEXT,
    outputs TEXT
);
CREATE INDEX IF NOT EXISTS messages_status_id ON messages(status, id);
CREATE INDEX IF NOT EXISTS messages_received_at ON messages(received_at);
"""

_COLUMNS = "id, source, content_type, headers, payload, status, received_at, updated_at, attempts, replays, " \
    "error_class, error_reason, outputs"

#: Called after a finish commits: (envelope id, final status, source name).
FinishListener = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Final result of one envelope, recorded when the worker acknowledges it."""

    status: str  # PUBLISHED, FAILED or FILTERED
    reason: str | None = None  # one PHI-free line (first dead letter / filter reason), None when published
    error_class: str | None = None  # error class, or the filter category
    outputs: tuple[str, ...] = ()  # bundle ids written


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    source: str
    content_type: str
    headers: dict[str, str]
    payload: bytes
    status: str
    received_at: float
    updated_at: float
    attempts: int
    replays: int
    error_class: str | None
    error_reason: str | None
    outputs: list[str]

    def envelope(self) -> Envelope:
        return Envelope(
            id=self.id,
            payload=self.payload,
            content_type=self.content_type,
            source=self.source,
            received_at=self.received_at,
            position=int(self.id),
            headers=self.headers,
        )


def _row(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        id=str(row[0]),
        source=row[1],
        content_type=row[2],
        headers=json.loads(row[3]),
        payload=bytes(row[4]),
        status=row[5],
        received_at=row[6],
        updated_at=row[7],
        attempts=row[8],
        replays=row[9],
        error_class=row[10],
        error_reason=row[11],
        outputs=json.loads(row[12]) if row[12] else [],
    )


_Op = tuple[Callable[[sqlite3.Connection], Any], "Future[Any]"]
_STOP = object()


class MessageStore:
    """The SQLite message store; thread-safe (one writer thread, one locked reader connection)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 10_000,
        max_group: int = 512,
        indexer: Callable[[bytes, str], IndexKeys] | None = None,
    ) -> None:
        self.path = Path(path)
        self._indexer = indexer or MessageIndexer()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        self._max_group = max_group
        self._closed = False
        self._listeners: list[FinishListener] = []
        self._landed = threading.Condition()
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        writer = self._connect()
        writer.executescript(_SCHEMA)
        migrate(writer, self._indexer)
        self._reader = self._connect()
        self._read_lock = threading.Lock()
        self._thread = threading.Thread(target=self._write_loop, args=(writer,), name="store-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    # -- writing (group commit) ---------------------------------------------------------------------

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
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, fn(conn)))
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO op")
                    results.append((False, TransientError(f"message store: {exc}")))
                except Exception as exc:  # a bug in an operation: fail that caller, keep the writer alive
                    conn.execute("ROLLBACK TO op")
                    results.append((False, exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = TransientError(f"message store {self.path}: {exc}")
            for _fn, future in batch:
                future.set_exception(error)
            return
        for (_fn, future), (ok, value) in zip(batch, results, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        with self._landed:
            self._landed.notify_all()

    def _submit(self, fn: Callable[[sqlite3.Connection], Any], timeout: float = 60.0) -> Any:
        if self._closed:
            raise TransientError(f"message store {self.path} is closed")
        future: Future[Any] = Future()
        self._queue.put((fn, future))
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            raise TransientError(f"message store {self.path}: commit timed out") from exc

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        """Store ``payload`` durably (committed and fsynced) and return its envelope id."""
        now = time.time()
        head = json.dumps(dict(headers), sort_keys=True)
        keys = self._indexer(payload, content_type)
        row = (
            source, content_type, head, sqlite3.Binary(payload), RECEIVED, now, now, keys.message_type, keys.control_id
        )

        def insert(conn: sqlite3.Connection) -> str:
            cur = conn.execute(
                "INSERT INTO messages (source, content_type, headers, payload, status, received_at, updated_at, "
                "message_type, control_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            if keys.accession_hashes:
                conn.executemany(
                    "INSERT INTO message_accessions (message_id, accession_hash) VALUES (?, ?)",
                    [(cur.lastrowid, h) for h in keys.accession_hashes],
                )
            return str(cur.lastrowid)

        envelope_id: str = self._submit(insert)
        return envelope_id

    def land_many(self, items: Sequence[tuple[bytes, str, str, Mapping[str, str]]]) -> list[str]:
        """Store several (payload, content type, source, headers) in one transaction (one fsync), in order:
        the envelope ids ascend in ``items`` order, so the worker handles them in that order."""
        now = time.time()
        rows = [
            (source, ctype, json.dumps(dict(headers), sort_keys=True), sqlite3.Binary(payload), RECEIVED, now, now)
            for payload, ctype, source, headers in items
        ]

        def insert(conn: sqlite3.Connection) -> list[str]:
            ids: list[str] = []
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO messages (source, content_type, headers, payload, status, received_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                ids.append(str(cur.lastrowid))
            return ids

        envelope_ids: list[str] = self._submit(insert)
        return envelope_ids

    def mark_mapped(self, items: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Record that these envelopes were converted (bundle ids to be published)."""
        now = time.time()
        rows = [(json.dumps(list(outputs)), now, int(eid)) for eid, outputs in items]

        def update(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE messages SET status='mapped', outputs=?, updated_at=?, attempts=attempts+1 "
                "WHERE id=? AND status IN ('received','mapped')",
                rows,
            )

        if rows:
            self._submit(update)

    def finish(self, outcomes: Iterable[tuple[Envelope, Outcome]]) -> None:
        """Record final statuses in one transaction, then tell the finish listeners."""
        now = time.time()
        items = list(outcomes)
        rows = [
            (o.status, o.error_class, o.reason, json.dumps(list(o.outputs)), now, int(env.id)) for env, o in items
        ]

        def update(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE messages SET status=?, error_class=?, error_reason=?, outputs=?, updated_at=? WHERE id=?",
                rows,
            )

        if rows:
            self._submit(update)
        for env, outcome in items:
            for listener in list(self._listeners):
                listener(env.id, outcome.status, env.source)

    def requeue(
        self,
        *,
        ids: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
        dead_letters: bool = False,
    ) -> int:
        """Set matching finished messages back to ``received`` (replay); returns how many."""
        clauses = ["status IN ('published','failed','filtered')"]
        params: list[Any] = []
        if ids:
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            params.extend(int(i) for i in ids)
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("received_at < ?")
            params.append(until)
        if dead_letters:
            clauses.append("status = 'failed'")
        sql = (
            "UPDATE messages SET status='received', replays=replays+1, error_class=NULL, error_reason=NULL, "
            f"updated_at=? WHERE {' AND '.join(clauses)}"
        )
        now = time.time()

        def update(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql, [now, *params]).rowcount)

        count: int = self._submit(update)
        return count

    # -- reading ------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._read_lock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise TransientError(f"message store {self.path}: {exc}") from exc

    def unfinished(self, limit: int, exclude: Iterable[int] = ()) -> list[StoredMessage]:
        skip = set(exclude)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM messages WHERE status IN ('received','mapped') ORDER BY id LIMIT ?",
            (limit + len(skip),),
        )
        return [_row(r) for r in rows if r[0] not in skip][:limit]

    def get(self, envelope_id: str) -> StoredMessage | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM messages WHERE id=?", (int(envelope_id),))
        return _row(rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self._query("SELECT status, COUNT(*) FROM messages GROUP BY status"):
            counts[status] = n
        return counts

    def reasons(self, status: str) -> dict[str, int]:
        """Messages of ``status`` (``filtered``, ``failed``) counted by their one-line reason."""
        rows = self._query(
            "SELECT COALESCE(error_reason, ''), COUNT(*) FROM messages WHERE status=? GROUP BY 1 ORDER BY 2 DESC",
            (status,),
        )
        return {str(r): int(n) for r, n in rows}

    def oldest_unfinished(self) -> float | None:
        rows = self._query("SELECT MIN(received_at) FROM messages WHERE status IN ('received','mapped')")
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def index_keys(self, payload: bytes, content_type: str) -> IndexKeys:
        """The search keys :meth:`land` stores for these bytes (accession hashes are kept only in a lookup table
        keyed by hash)."""
        return self._indexer(payload, content_type)

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read-only query on the reader connection (the console's searches)."""
        return self._query(sql, params)

    def transaction(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(connection)`` in the writer's next committed (and fsynced) transaction; returns its result."""
        return self._submit(fn)

    def wait_for_landing(self, timeout: float) -> None:
        """Block until something commits in this process or ``timeout`` passes."""
        with self._landed:
            self._landed.wait(timeout)

    def add_listener(self, listener: FinishListener) -> None:
        self._listeners.append(listener)

    def healthy(self) -> bool:
        return not self._closed and self._thread.is_alive()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(30)
        with self._read_lock:
            self._reader.close()


class StoreSource:
    """The worker's view of the store: unfinished messages in id order, each handed out once until acked.

    ``pause`` makes ``poll`` return nothing; ``resume`` also forgets the envelopes handed out but not
    acknowledged, so they are polled again (the equivalent of a Kafka seek back).
    """

    def __init__(self, store: MessageStore, name: str = "store", poll_interval: float = 0.2) -> None:
        self.store = store
        self.name = name
        self._poll_interval = poll_interval
        self._inflight: set[int] = set()
        self._paused = False
        self._lock = threading.Lock()

    def poll(self, max_records: int, timeout: float) -> Sequence[Envelope]:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            if not self._paused:
                with self._lock:
                    rows = self.store.unfinished(max_records, self._inflight)
                    self._inflight.update(int(r.id) for r in rows)
                if rows:
                    return [r.envelope() for r in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self.store.wait_for_landing(min(remaining, self._poll_interval))

    def mark_mapped(self, items: Iterable[tuple[Envelope, Sequence[str]]]) -> None:
        self.store.mark_mapped((env.id, outputs) for env, outputs in items)

    def finish(self, outcomes: Sequence[tuple[Envelope, Outcome]]) -> None:
        self.store.finish(outcomes)
        with self._lock:
            self._inflight.difference_update(int(env.id) for env, _ in outcomes)

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        self.finish([(env, Outcome(PUBLISHED)) for env in envelopes])

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._inflight.clear()

    def close(self) -> None:
        """The store itself is closed by its owner (the runtime)."""
