"""Embedded durable landing and message store: one SQLite file in WAL mode with ``synchronous=FULL``.

* :meth:`MessageStore.land` (the :class:`engine.sources.base.Landing` protocol) returns only after the
  transaction holding the raw bytes is committed and the WAL is fsynced. Concurrent landers (the MLLP
  asyncio thread, pynetdicom's association threads, the inbox) share one writer thread that commits
  whatever is queued in one transaction (*group commit*, :mod:`engine.store_writer`): every caller still
  waits for its own fsync, but N concurrent callers pay for one. When the write fails, ``land`` raises
  :class:`engine.errors.TransientError` so that the transport answers ``AE`` / ``0xA700``.
* :class:`StoreSource` (the :class:`engine.sources.base.Source` protocol, in :mod:`engine.store_source`,
  re-exported here) hands the worker every message whose status is ``received`` or ``mapped`` in id order,
  skipping the ones already handed out and not yet acknowledged. Because the status lives in the file,
  unfinished messages are resumed after a crash or restart simply by polling again. A conversion made at
  intake for the acknowledgement (``ack: converted``) is handed to the worker in memory
  (:class:`engine.store_source.PreparedConversions`), so no message is converted twice.
* Every operation of a group is durable when it returns (``synchronous=FULL``) except :meth:`mark_mapped`, a
  progress note whose loss only means converting again: a group holding only such notes is committed
  without an fsync, and the next durable commit makes it durable too (the WAL is written in order).
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

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engine.errors import TransientError
from engine.message_index import IndexKeys, MessageIndexer
from engine.outcomes import Conversion
from engine.sources.base import Envelope
from engine.store_records import (
    FAILED,
    FILTERED,
    MAPPED,
    PUBLISHED,
    RECEIVED,
    STATUSES,
    UNFINISHED,
    Outcome,
    StoredMessage,
    row_to_message,
)
from engine.store_schema import migrate
from engine.store_source import PreparedConversions, StoreSource
from engine.store_writer import GroupCommitWriter

__all__ = [
    "FAILED",
    "FILTERED",
    "MAPPED",
    "PUBLISHED",
    "RECEIVED",
    "STATUSES",
    "UNFINISHED",
    "MessageStore",
    "Outcome",
    "PreparedConversions",
    "StoreSource",
    "StoredMessage",
]

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
        self.prepared = PreparedConversions()  # conversions made before an ACK, for the worker (store_source)
        self._closed = False
        self._listeners: list[FinishListener] = []
        writer = self._connect()
        writer.executescript(_SCHEMA)
        migrate(writer, self._indexer)
        self._reader = self._connect()
        self._read_lock = threading.Lock()
        self._writer = GroupCommitWriter(writer, str(self.path), max_group=max_group)
        self._landed = self._writer.committed

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # statement journals (the group commit's savepoint per operation) in memory: on disk (the default) they
        # cost a 4-byte and a 4 KiB pwrite per page changed, more than half of the store's write calls (measured)
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def _submit(self, fn: Callable[[sqlite3.Connection], Any], timeout: float = 60.0, *, durable: bool = True) -> Any:
        """Run ``fn`` in the writer's next group; ``durable``: return only after the WAL is fsynced."""
        if self._closed:
            raise TransientError(f"message store {self.path} is closed")
        future = self._writer.submit(fn, durable=durable)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            raise TransientError(f"message store {self.path}: commit timed out") from exc

    def land(
        self,
        payload: bytes,
        *,
        content_type: str,
        source: str,
        headers: Mapping[str, str],
        conversion: Conversion | Future[Conversion | None] | None = None,
    ) -> str:
        """Store ``payload`` durably (committed and fsynced) and return its envelope id.

        ``conversion``: the result of converting ``payload`` at intake (``ack: converted``), or a future of it
        (resolve it with None when the conversion fails); it is handed to the worker through :attr:`prepared`
        before the row becomes visible, so the worker does not convert again."""
        future = self.land_async(
            payload, content_type=content_type, source=source, headers=headers, conversion=conversion
        )
        try:
            return future.result(60.0)
        except TimeoutError as exc:
            raise TransientError(f"message store {self.path}: commit timed out") from exc

    def land_async(
        self,
        payload: bytes,
        *,
        content_type: str,
        source: str,
        headers: Mapping[str, str],
        conversion: Conversion | Future[Conversion | None] | None = None,
    ) -> Future[str]:
        """:meth:`land` without blocking: the future resolves to the envelope id once the row is committed and
        fsynced, or fails with :class:`TransientError` (an event loop awaits it without holding a thread)."""
        if self._closed:
            raise TransientError(f"message store {self.path} is closed")
        now = time.time()
        head = json.dumps(dict(headers), sort_keys=True)
        keys = self._indexer(payload, content_type)
        row = (
            source, content_type, head, sqlite3.Binary(payload), RECEIVED, now, now, keys.message_type, keys.control_id
        )
        handed: list[str] = []

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
            envelope_id = str(cur.lastrowid)
            if conversion is not None:  # before the commit: the worker cannot see the row without its hand-over
                handed.append(envelope_id)
                self.prepared.put(envelope_id, conversion, size=4 * len(payload))
            return envelope_id

        def rolled_back(done: Future[str]) -> None:
            if done.exception() is not None:
                for eid in handed:  # the id may be given to another message: forget the hand-over
                    self.prepared.discard(eid)

        future: Future[str] = self._writer.submit(insert)
        if conversion is not None:
            future.add_done_callback(rolled_back)
        return future

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
        """Record that these envelopes were converted (bundle ids to be published). Not fsynced on its own
        (made durable by the next durable commit): losing it in a power cut only means the message is
        converted again from ``received``, with the same outputs."""
        now = time.time()
        rows = [(json.dumps(list(outputs)), now, int(eid)) for eid, outputs in items]

        def update(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE messages SET status='mapped', outputs=?, updated_at=?, attempts=attempts+1 "
                "WHERE id=? AND status IN ('received','mapped')",
                rows,
            )

        if rows:
            self._submit(update, durable=False)

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
        return [row_to_message(r) for r in rows if r[0] not in skip][:limit]

    def count_unfinished(self, limit: int) -> int:
        """How many messages are ``received``/``mapped``, counting at most ``limit`` (cheap: the status index)."""
        rows = self._query(
            "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE status IN ('received','mapped') LIMIT ?)", (limit,)
        )
        return int(rows[0][0])

    def get(self, envelope_id: str) -> StoredMessage | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM messages WHERE id=?", (int(envelope_id),))
        return row_to_message(rows[0]) if rows else None

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
        return not self._closed and self._writer.alive()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close(30)
        with self._read_lock:
            self._reader.close()

