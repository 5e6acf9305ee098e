"""Backfill checkpoint in the embedded SQLite store: what is done, so that a re-run continues where it stopped.

Tables (next to the message store's ``messages`` in the same file; WAL, ``synchronous=FULL``):

* ``backfill_jobs(job, sources, counts, started_at, updated_at, finished_at)``: one row per job; ``counts``
  is the running summary (JSON) as of the last commit;
* ``backfill_files(job, path, size, mtime_ns, done_upto, finished)``: per input file, the highest frame
  index whose outputs are all confirmed by the sinks (frames are committed in file order);
* ``backfill_seen(job, digest, unit)``: the message key of every frame handed out and the first unit
  (``path#index``) that carried it; a later frame with the same key is an exact duplicate;
* ``backfill_seen_recent(job, digest, unit)``: the keys claimed since the last merge, appended in claim order
  (no index: an append dirties a page or two per commit). They are also held in memory (at most
  :attr:`SqliteCheckpoint.MERGE_EVERY` keys: memory stays bounded whatever the input size) and merged into
  ``backfill_seen`` sorted, in the transaction of a commit, once that many piled up. Inserting each random
  key into the ``backfill_seen`` index as it came dirtied one page per key, every page rewritten to the WAL
  at every commit: 4-19 us of the parent's CPU per message, growing with the job. A claim now looks the key
  up in memory, then (read only) in ``backfill_seen``.

A job is identified by its sources and destination (:func:`job_id`): running the same command again
resumes it. Everything a commit covers (watermarks, seen keys, counts) is written in one transaction, only
after the sinks flushed, so a kill at any point loses nothing and, on re-run, repeats at most the frames
after the last commit; their outputs are idempotent overwrites (deterministic Bundle ids). A file whose
size or mtime changed since is read again from the start. :class:`MemoryCheckpoint` is the same interface
without persistence (``engine map``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.backfill.formats import InputFile
from engine.backfill.spill import SpillMap

__all__ = ["Checkpoint", "MemoryCheckpoint", "SqliteCheckpoint", "job_id"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS backfill_jobs (
    job TEXT PRIMARY KEY, sources TEXT NOT NULL, counts TEXT,
    started_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL
);
CREATE TABLE IF NOT EXISTS backfill_files (
    job TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    done_upto INTEGER NOT NULL DEFAULT 0, finished INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS backfill_seen (
    job TEXT NOT NULL, digest BLOB NOT NULL, unit TEXT NOT NULL, PRIMARY KEY (job, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS backfill_seen_recent (job TEXT NOT NULL, digest BLOB NOT NULL, unit TEXT NOT NULL);
"""


#: SQLite page cache of the checkpoint connection (KiB): message keys are random, so every claim reads a
#: random page of the ``backfill_seen`` index; the default 2 MiB cache misses on most of them past ~50,000
#: messages. Bounded (it is a cache): RSS does not grow past it whatever the input size.
CACHE_KIB = 64 * 1024


def job_id(sources: Sequence[Path], destination: str) -> str:
    """Stable id of a backfill: its resolved sources (in order) and where it writes."""
    text = json.dumps([[str(p.resolve()) for p in sources], destination])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpoint(Protocol):
    def counts(self) -> dict[str, Any] | None: ...

    def done_upto(self, f: InputFile) -> tuple[int, bool]: ...

    def claim(self, keys: Sequence[tuple[bytes, str]]) -> list[str | None]: ...

    def commit(self, files: Iterable[tuple[InputFile, int, bool]], counts: dict[str, Any]) -> None: ...

    def finish(self, counts: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class SqliteCheckpoint:
    """The checkpoint of one job in ``path``; ``claim`` (reading loop) and ``commit`` (flush thread) share a lock."""

    #: keys claimed since the last merge that trigger a merge into ``backfill_seen`` at the next commit
    MERGE_EVERY = 1 << 16

    def __init__(self, path: Path, job: str, sources: Sequence[Path]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.job = job
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self._lock = threading.Lock()  # claim() from the reading loop, commit() from the flush thread
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # claims probe random keys: keep the index cached
        self.conn.executescript(_SCHEMA)
        now = time.time()
        self.conn.execute(
            "INSERT OR IGNORE INTO backfill_jobs (job, sources, started_at, updated_at) VALUES (?, ?, ?, ?)",
            (job, json.dumps([str(p) for p in sources]), now, now),
        )
        rows = self.conn.execute("SELECT digest, unit FROM backfill_seen_recent WHERE job=?", (job,)).fetchall()
        self._recent: dict[bytes, str] = {bytes(d): u for d, u in rows}  # == this job's backfill_seen_recent
        merged = self.conn.execute("SELECT 1 FROM backfill_seen WHERE job=? LIMIT 1", (job,)).fetchone()
        self._merged = merged is not None  # no key of this job in the index yet: nothing to look up there
        self.conn.execute("BEGIN IMMEDIATE")  # one open transaction per commit interval

    def counts(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT counts FROM backfill_jobs WHERE job=?", (self.job,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def done_upto(self, f: InputFile) -> tuple[int, bool]:
        """(highest committed frame index, file finished) for an unchanged file; (0, False) otherwise."""
        row = self.conn.execute(
            "SELECT size, mtime_ns, done_upto, finished FROM backfill_files WHERE job=? AND path=?",
            (self.job, str(f.path)),
        ).fetchone()
        if row is None or (row[0], row[1]) != (f.size, f.mtime_ns):
            return 0, False
        return int(row[2]), bool(row[3])

    def claim(self, keys: Sequence[tuple[bytes, str]]) -> list[str | None]:
        """For each (message key, unit): the unit that carried the key first when that is another unit
        (an exact duplicate), else None (and the key is recorded for this unit)."""
        if not keys:
            return []
        with self._lock:
            return self._claim(keys)

    def _claim(self, keys: Sequence[tuple[bytes, str]]) -> list[str | None]:
        recent = self._recent
        older = list({k for k, _ in keys if k not in recent}) if self._merged else []  # then in the index: read only
        found: dict[bytes, str] = {}
        for i in range(0, len(older), 500):
            part = older[i : i + 500]
            rows = self.conn.execute(
                f"SELECT digest, unit FROM backfill_seen WHERE job=? AND digest IN ({','.join('?' * len(part))})",
                (self.job, *part),
            ).fetchall()
            found.update((bytes(d), u) for d, u in rows)
        result: list[str | None] = []
        new: list[tuple[str, bytes, str]] = []
        for key, unit in keys:
            first = recent.get(key) or found.get(key)
            if first is None:
                recent[key] = unit
                new.append((self.job, key, unit))
                result.append(None)
            else:
                result.append(None if first == unit else first)
        self.conn.executemany("INSERT INTO backfill_seen_recent (job, digest, unit) VALUES (?, ?, ?)", new)
        return result

    def commit(self, files: Iterable[tuple[InputFile, int, bool]], counts: dict[str, Any]) -> None:
        """Record watermarks and counts (after the sinks flushed) and make everything since the last commit
        durable in one transaction."""
        with self._lock:
            self._commit(files, counts)

    def _commit(self, files: Iterable[tuple[InputFile, int, bool]], counts: dict[str, Any]) -> None:
        now = time.time()
        self.conn.executemany(
            "INSERT INTO backfill_files (job, path, size, mtime_ns, done_upto, finished) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job, path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
            "done_upto=excluded.done_upto, finished=excluded.finished",
            [(self.job, str(f.path), f.size, f.mtime_ns, upto, int(done)) for f, upto, done in files],
        )
        self.conn.execute(
            "UPDATE backfill_jobs SET counts=?, updated_at=? WHERE job=?", (json.dumps(counts), now, self.job)
        )
        merge = len(self._recent) >= self.MERGE_EVERY
        if merge:  # sorted: each page of the index is rewritten once per merge, not once per key
            self.conn.execute(
                "INSERT OR IGNORE INTO backfill_seen (job, digest, unit) SELECT job, digest, unit "
                "FROM backfill_seen_recent WHERE job=? ORDER BY digest",
                (self.job,),
            )
            self.conn.execute("DELETE FROM backfill_seen_recent WHERE job=?", (self.job,))
        self.conn.execute("COMMIT")
        if merge:
            self._recent.clear()
            self._merged = True
        self.conn.execute("BEGIN IMMEDIATE")

    def finish(self, counts: dict[str, Any]) -> None:
        self.conn.execute("UPDATE backfill_jobs SET finished_at=? WHERE job=?", (time.time(), self.job))
        self.commit((), counts)

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        self.conn.close()


class MemoryCheckpoint:
    """No persistence (``engine map``): duplicates are still recognised within the run; the keys stay in
    memory up to ``spill_at`` of them (default :data:`engine.backfill.spill.SPILL_AT`), then move to a
    temporary file (:class:`engine.backfill.spill.SpillMap`): bounded memory whatever the input size."""

    def __init__(self, spill_at: int | None = None) -> None:
        self._seen = SpillMap(spill_at)

    def counts(self) -> dict[str, Any] | None:
        return None

    def done_upto(self, f: InputFile) -> tuple[int, bool]:
        return 0, False

    def claim(self, keys: Sequence[tuple[bytes, str]]) -> list[str | None]:
        result: list[str | None] = []
        for key, unit in keys:
            first = self._seen.setdefault(key, unit)
            result.append(None if first == unit else first)
        return result

    def commit(self, files: Iterable[tuple[InputFile, int, bool]], counts: dict[str, Any]) -> None:
        return None

    def finish(self, counts: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        self._seen.close()
