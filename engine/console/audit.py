"""Audit log of the console: who viewed PHI and who reprocessed or discarded what.

Every entry goes to the message store's ``audit_log`` table (in the same transaction as the action it
records, for reprocess and discard) and to a JSON-lines file (one object per line, appended, flushed and
fsynced): ``{"at": ISO 8601 UTC, "actor": name, "roles": [...], "action": ..., "message_id": id,
"detail": {...}}``. Actions: ``view_original``, ``view_output``, ``reprocess``, ``discard``. Entries hold
ids only, never message content. When the entry cannot be written, the view or action is refused
(the caller gets 503): nothing PHI-bearing is shown without its audit record.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.console.auth import Principal
from engine.errors import TransientError
from engine.store import MessageStore

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, path: Path, store: MessageStore) -> None:
        self.path = path
        self.store = store
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def entry(
        self, principal: Principal, action: str, message_id: int | None, detail: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "at": time.time(),
            "actor": principal.name,
            "roles": sorted(principal.roles),
            "action": action,
            "message_id": message_id,
            "detail": detail,
        }

    @staticmethod
    def insert(conn: sqlite3.Connection, entry: dict[str, Any]) -> None:
        """Write ``entry`` to the store table inside the caller's transaction."""
        conn.execute(
            "INSERT INTO audit_log (at, actor, roles, action, message_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (
                entry["at"],
                entry["actor"],
                json.dumps(entry["roles"]),
                entry["action"],
                entry["message_id"],
                json.dumps(entry["detail"], sort_keys=True),
            ),
        )

    def record(self, principal: Principal, action: str, message_id: int | None, detail: dict[str, Any]) -> None:
        """Store and append one entry (for views; actions use :meth:`insert` then :meth:`append`)."""
        entry = self.entry(principal, action, message_id, detail)
        self.store.transaction(lambda conn: self.insert(conn, entry))
        self.append(entry)

    def append(self, entry: dict[str, Any]) -> None:
        line = dict(entry)
        line["at"] = datetime.fromtimestamp(entry["at"], UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        data = (json.dumps(line, sort_keys=True) + "\n").encode("utf-8")
        try:
            with self._lock, open(self.path, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise TransientError(f"console audit log {self.path}: {exc.strerror or exc}") from exc
