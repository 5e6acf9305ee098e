"""A key -> value map that keeps bounded memory: a dict up to ``limit`` entries, then a temporary SQLite file.

``engine map`` keeps no checkpoint, but it still has to recognise exact duplicates within the run (message
key -> the unit that carried it first, :class:`engine.backfill.checkpoint.MemoryCheckpoint`) and count distinct
Bundle ids for ``summary.json``. Held in dicts and sets those grow by ~260 bytes per message (measured: 50,000
messages, 59 MB peak RSS), ~1.3 GB for a 5,000,000-message archive. :class:`SpillMap` moves its entries into a
SQLite file past ``limit`` (default 262,144: ~40 MB each in memory at most; measured: 80 MB for the key map
and the id set together at the limit, 100 MB after 300,000 more each) and answers from there on: memory
stays bounded whatever the input size, at ~7-8 µs per look-up once spilled (no cost before).

The file lives in the system's temporary directory (``TMPDIR``) and is unlinked as soon as it is open (Linux
keeps it while the connection holds it; ``journal_mode=OFF``: no other file), so nothing is left behind even
after a kill. ``synchronous=OFF``: the map dies with the run anyway.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile

__all__ = ["SPILL_AT", "SpillMap"]

#: entries kept in memory before the map moves to its temporary file
SPILL_AT = 1 << 18


class SpillMap:
    """``setdefault`` / ``add`` / ``len`` of a bytes -> str map (see the module docstring). Not thread-safe."""

    def __init__(self, limit: int | None = None, directory: str | None = None) -> None:
        self.limit = max(1, SPILL_AT if limit is None else limit)  # read at construction: tests may lower it
        self.directory = directory
        self._memory: dict[bytes, str] = {}
        self._db: sqlite3.Connection | None = None
        self._size = 0  # entries in the file

    @property
    def spilled(self) -> bool:
        return self._db is not None

    def __len__(self) -> int:
        return self._size if self._db is not None else len(self._memory)

    def setdefault(self, key: bytes, value: str) -> str:
        """The value stored for ``key``; ``value`` (now stored) when there was none."""
        if self._db is None:
            first = self._memory.setdefault(key, value)
            if len(self._memory) > self.limit:
                self._spill()
            return first
        inserted = self._db.execute(
            "INSERT INTO spill (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING RETURNING value", (key, value)
        ).fetchone()
        if inserted is not None:
            self._size += 1
            return value
        row = self._db.execute("SELECT value FROM spill WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    def add(self, key: str) -> None:
        """Set semantics (distinct Bundle ids): record ``key``."""
        self.setdefault(key.encode(), "")

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix="engine-map-", suffix=".sqlite", dir=self.directory)
        os.close(fd)
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # closed by the owner
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA cache_size=-16384")  # 16 MiB of pages: bounded like the rest
            db.execute("CREATE TABLE spill (key BLOB PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)  # the open connection keeps the file; nothing is left after the run
        db.execute("BEGIN")  # one transaction for the run: no commit (and no write) per entry
        db.executemany("INSERT INTO spill (key, value) VALUES (?, ?)", self._memory.items())
        self._size = len(self._memory)
        self._memory = {}
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._memory = {}
