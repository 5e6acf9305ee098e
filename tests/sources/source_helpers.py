"""Helpers for the ingress transport tests: real landings (SQLite file), test data, CLI peers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from engine.errors import TransientError

# the shared test data sits next to the repository (../shared/testdata)
TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
if not TESTDATA.is_dir():
    TESTDATA = Path("/work/shared/testdata")


class SqliteLanding:
    """A real durable landing: one SQLite (WAL, synchronous=FULL) row per message, committed before return."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS landed (id INTEGER PRIMARY KEY, payload BLOB NOT NULL,"
            " content_type TEXT NOT NULL, source TEXT NOT NULL, headers TEXT NOT NULL)"
        )
        self.calls = 0

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        with self._lock:
            self.calls += 1
            cur = self._db.execute(
                "INSERT INTO landed (payload, content_type, source, headers) VALUES (?, ?, ?, ?)",
                (payload, content_type, source, json.dumps(dict(headers), sort_keys=True)),
            )
            return str(cur.lastrowid)

    def rows(self) -> list[tuple[bytes, str, str, dict[str, str]]]:
        """Read back through a separate connection (what a restarted engine would see)."""
        db = sqlite3.connect(self.path)
        try:
            rows = db.execute("SELECT payload, content_type, source, headers FROM landed ORDER BY id").fetchall()
        finally:
            db.close()
        return [(bytes(p), c, s, json.loads(h)) for p, c, s, h in rows]

    def close(self) -> None:
        self._db.close()


class FailingLanding:
    """A landing whose store is unavailable: every land raises TransientError."""

    def __init__(self) -> None:
        self.calls = 0

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        self.calls += 1
        raise TransientError("message store unavailable (disk full)")


def require_tool(name: str) -> str:
    """Path of a CLI peer; skip when missing, fail when CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (run scripts/install-system-deps.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_until_refused(port: int, timeout: float = 10.0) -> bool:
    """True once nothing accepts TCP connections on 127.0.0.1:``port`` (the listener stopped accepting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


class SlowLanding:
    """Holds every land() until ``release`` is set: to observe a listener stopping with a store in flight."""

    def __init__(self, inner: SqliteLanding) -> None:
        self.inner = inner
        self.started = threading.Event()
        self.release = threading.Event()

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        self.started.set()
        assert self.release.wait(10)
        return str(self.inner.land(payload, content_type=content_type, source=source, headers=headers))
