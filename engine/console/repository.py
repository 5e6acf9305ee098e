"""Searches and operator actions on the message store, for the API and the console pages.

Searches use only PHI-free columns: receive time, source, status, message type (MSH-9 / SOP Class),
control id (MSH-10 / SOP Instance UID) and accession hashes (:func:`engine.message_index.accession_hash`
of the query). Results are newest first with keyset paging (``before_id``).

Actions (each in one store transaction with its audit row):

* **reprocess**: a finished message (any status but ``received``/``mapped``) goes back to ``received``
  with ``replays`` + 1, exactly like ``engine replay --id``; the running worker picks it up;
* **discard**: a dead letter (``failed``) becomes ``discarded``; its original bytes and history stay in
  the store (nothing is deleted), it is no longer offered for replay by ``engine replay --dead-letters``,
  and it can still be reprocessed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from engine.console.audit import AuditLog
from engine.console.auth import Principal
from engine.message_index import accession_hash
from engine.store import MessageStore

__all__ = ["UNFINISHED_STATUSES", "ActionRefused", "Repository", "SearchQuery"]

UNFINISHED_STATUSES = ("received", "mapped")
DISCARDED = "discarded"
_SUMMARY = (
    "id, source, content_type, status, message_type, control_id, received_at, updated_at, attempts, replays, "
    "error_class, error_reason, outputs"
)


class ActionRefused(Exception):
    """The message is not in a state that allows the action (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    since: float | None = None
    until: float | None = None
    source: str | None = None
    status: str | None = None
    message_type: str | None = None  # exact, or leading components ("ORU^R01")
    control_id: str | None = None
    accession: str | None = None  # plain value: hashed here, never stored or logged
    accession_hash: str | None = None
    before_id: int | None = None
    limit: int = 50


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row[0],
        "source": row[1],
        "content_type": row[2],
        "status": row[3],
        "message_type": row[4],
        "control_id": row[5],
        "received_at": row[6],
        "updated_at": row[7],
        "attempts": row[8],
        "replays": row[9],
        "error_class": row[10],
        "error_reason": row[11],
        "outputs": json.loads(row[12]) if row[12] else [],
    }


class Repository:
    def __init__(self, store: MessageStore, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    # -- reading ------------------------------------------------------------------------------------

    def search(self, q: SearchQuery) -> tuple[list[dict[str, Any]], int | None]:
        """Matching messages, newest first, and the ``before_id`` of the next page (None at the end)."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("source", q.source), ("status", q.status), ("control_id", q.control_id)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if q.message_type:
            # "ORU" and "ORU^R01" also find "ORU^R01^ORU_R01" (a range on the index: '_' follows '^')
            value = q.message_type.strip()
            clauses.append("(message_type = ? OR (message_type >= ? AND message_type < ?))")
            params.extend([value, value + "^", value + "_"])
        if q.since is not None:
            clauses.append("received_at >= ?")
            params.append(q.since)
        if q.until is not None:
            clauses.append("received_at < ?")
            params.append(q.until)
        hashes = [h for h in (q.accession_hash, accession_hash(q.accession) if q.accession else None) if h]
        for h in hashes:
            clauses.append("id IN (SELECT message_id FROM message_accessions WHERE accession_hash = ?)")
            params.append(h.lower())
        if q.before_id is not None:
            clauses.append("id < ?")
            params.append(q.before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.store.select(
            f"SELECT {_SUMMARY} FROM messages {where} ORDER BY id DESC LIMIT ?", [*params, q.limit + 1]
        )
        items = [_summary(r) for r in rows[: q.limit]]
        return items, (items[-1]["id"] if len(rows) > q.limit else None)

    def summary(self, message_id: int) -> dict[str, Any] | None:
        rows = self.store.select(f"SELECT {_SUMMARY} FROM messages WHERE id = ?", (message_id,))
        return _summary(rows[0]) if rows else None

    def detail(self, message_id: int) -> dict[str, Any] | None:
        """Summary plus PHI-free headers, size and SHA-256 of the original, history, accession hashes, audit."""
        base = self.summary(message_id)
        if base is None:
            return None
        headers, payload = self.store.select("SELECT headers, payload FROM messages WHERE id = ?", (message_id,))[0]
        payload = bytes(payload)
        base["headers"] = json.loads(headers)
        base["size"] = len(payload)
        base["sha256"] = hashlib.sha256(payload).hexdigest()
        base["accession_hashes"] = list(self.store.index_keys(payload, base["content_type"]).accession_hashes)
        # landing records no event row (it is the row itself): the history starts from received_at
        received = {"at": base["received_at"], "event": "received", "status": "received", "attempts": 0,
                    "replays": 0, "error_class": None, "error_reason": None, "outputs": []}
        base["history"] = [received] + [
            {
                "at": r[0], "event": r[1], "status": r[2], "attempts": r[3], "replays": r[4],
                "error_class": r[5], "error_reason": r[6], "outputs": json.loads(r[7]) if r[7] else [],
            }
            for r in self.store.select(
                "SELECT at, event, status, attempts, replays, error_class, error_reason, outputs "
                "FROM message_events WHERE message_id = ? ORDER BY id",
                (message_id,),
            )
        ]
        base["audit"] = [
            {"at": r[0], "actor": r[1], "action": r[2]}
            for r in self.store.select(
                "SELECT at, actor, action FROM audit_log WHERE message_id = ? ORDER BY id", (message_id,)
            )
        ]
        return base

    def original(self, message_id: int) -> tuple[bytes, str] | None:
        rows = self.store.select("SELECT payload, content_type FROM messages WHERE id = ?", (message_id,))
        return (bytes(rows[0][0]), str(rows[0][1])) if rows else None

    def sources(self) -> list[dict[str, Any]]:
        """Per source: counts per status, total, first and last receive time."""
        by_source: dict[str, dict[str, Any]] = {}
        for source, status, count, first, last in self.store.select(
            "SELECT source, status, COUNT(*), MIN(received_at), MAX(received_at) FROM messages "
            "GROUP BY source, status ORDER BY source, status"
        ):
            entry = by_source.setdefault(
                source, {"source": source, "counts": {}, "total": 0, "first_received_at": first,
                         "last_received_at": last}
            )
            entry["counts"][status] = count
            entry["total"] += count
            entry["first_received_at"] = min(entry["first_received_at"], first)
            entry["last_received_at"] = max(entry["last_received_at"], last)
        return list(by_source.values())

    # -- actions ------------------------------------------------------------------------------------

    def reprocess(self, message_id: int, principal: Principal) -> dict[str, Any]:
        entry = self.audit.entry(principal, "reprocess", message_id, {})

        def update(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT status FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None or row[0] in UNFINISHED_STATUSES:
                return None if row is None else str(row[0])
            conn.execute(
                "UPDATE messages SET status='received', replays=replays+1, error_class=NULL, error_reason=NULL, "
                "updated_at=? WHERE id=?",
                (time.time(), message_id),
            )
            entry["detail"] = {"previous_status": row[0]}
            AuditLog.insert(conn, entry)
            return "ok"

        return self._act(update, entry, message_id, "reprocess", "it is still being processed")

    def discard(self, message_id: int, principal: Principal) -> dict[str, Any]:
        entry = self.audit.entry(principal, "discard", message_id, {"previous_status": "failed"})

        def update(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT status FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None or row[0] != "failed":
                return None if row is None else str(row[0])
            conn.execute(
                "UPDATE messages SET status=?, updated_at=? WHERE id=?", (DISCARDED, time.time(), message_id)
            )
            AuditLog.insert(conn, entry)
            return "ok"

        return self._act(update, entry, message_id, "discard", "only dead letters (status failed) can be discarded")

    def _act(self, update: Any, entry: dict[str, Any], message_id: int, action: str, why: str) -> dict[str, Any]:
        result = self.store.transaction(update)
        if result is None:
            raise KeyError(message_id)
        if result != "ok":
            raise ActionRefused(f"cannot {action} message {message_id} (status {result}): {why}")
        self.audit.append(entry)
        summary = self.summary(message_id)
        assert summary is not None
        return summary
