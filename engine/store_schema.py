"""Schema version 2 of the message store (``PRAGMA user_version``) and the migration of older files.

Additive only: the ``message_type`` and ``control_id`` columns (PHI-free search keys, see
:mod:`engine.message_index`), the ``message_accessions`` lookup table of accession hashes, ``message_events``
(filled by a trigger on every change of status, attempts or replays: a message's history, whoever changes
it) and the console's ``audit_log``. Landing itself writes no event row (the message row is that event), which
keeps the acknowledgement path short.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from engine.message_index import IndexKeys

__all__ = ["SCHEMA_VERSION", "migrate"]

#: Schema version 2 (PRAGMA user_version): PHI-free search keys, per-message history, console audit.
#: Added to existing files by :func:`_migrate` (additive: new columns, tables, indexes and triggers).
SCHEMA_VERSION = 2
_SCHEMA_V2 = """
CREATE INDEX IF NOT EXISTS messages_control_id ON messages(control_id);
CREATE INDEX IF NOT EXISTS messages_message_type ON messages(message_type);
CREATE INDEX IF NOT EXISTS messages_source_status ON messages(source, status);
CREATE TABLE IF NOT EXISTS message_accessions (
    accession_hash TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (accession_hash, message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS message_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    replays INTEGER NOT NULL,
    error_class TEXT,
    error_reason TEXT,
    outputs TEXT
);
CREATE INDEX IF NOT EXISTS message_events_message ON message_events(message_id, id);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    roles TEXT NOT NULL,
    action TEXT NOT NULL,
    message_id INTEGER,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_message ON audit_log(message_id, id);
CREATE TRIGGER IF NOT EXISTS messages_history_update AFTER UPDATE OF status, replays, attempts ON messages
WHEN OLD.status IS NOT NEW.status OR OLD.replays IS NOT NEW.replays OR OLD.attempts IS NOT NEW.attempts BEGIN
    INSERT INTO message_events (message_id, at, event, status, attempts, replays, error_class, error_reason, outputs)
    VALUES (NEW.id, NEW.updated_at, CASE WHEN NEW.replays > OLD.replays THEN 'replayed' ELSE NEW.status END,
            NEW.status, NEW.attempts, NEW.replays, NEW.error_class, NEW.error_reason, NEW.outputs);
END;
"""


def _statements(script: str) -> list[str]:
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [s for s in statements if s]


def migrate(conn: sqlite3.Connection, indexer: Callable[[bytes, str], IndexKeys]) -> None:
    """Bring a store file to :data:`SCHEMA_VERSION`: add the index columns, history, audit tables and
    triggers; fill the search keys of existing rows from their bytes and give each finished row an event
    for its current status, so that old messages are searchable and have a history too."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:  # another process was first
            conn.execute("COMMIT")
            return
        columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
        for name in ("message_type", "control_id"):
            if name not in columns:
                conn.execute(f"ALTER TABLE messages ADD COLUMN {name} TEXT")
        existing = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='message_events'").fetchone()[0]
        for statement in _statements(_SCHEMA_V2):  # not executescript: it would commit the open transaction
            conn.execute(statement)
        if not existing:
            conn.execute(
                "INSERT INTO message_events (message_id, at, event, status, attempts, replays, error_class, "
                "error_reason, outputs) SELECT id, updated_at, status, status, attempts, replays, error_class, "
                "error_reason, outputs FROM messages WHERE status != 'received' ORDER BY id"
            )
        last = 0
        while True:
            rows = conn.execute(
                "SELECT id, payload, content_type FROM messages WHERE id > ? AND message_type IS NULL "
                "AND control_id IS NULL ORDER BY id LIMIT 500",
                (last,),
            ).fetchall()
            if not rows:
                break
            for rowid, payload, content_type in rows:
                keys = indexer(bytes(payload), content_type)
                conn.execute(
                    "UPDATE messages SET message_type=?, control_id=? WHERE id=?",
                    (keys.message_type, keys.control_id, rowid),
                )
                conn.executemany(
                    "INSERT INTO message_accessions (message_id, accession_hash) VALUES (?, ?)",
                    [(rowid, h) for h in keys.accession_hashes],
                )
                last = rowid
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
