"""The store's group commit with statement journals in memory (``temp_store=MEMORY``): an operation that fails
half-way inside a shared transaction is rolled back alone (its savepoint), the others of the group commit."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from engine.errors import TransientError
from engine.sources.base import CONTENT_HL7V2
from engine.store import MessageStore


def test_a_failing_operation_is_rolled_back_alone_in_its_group(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    try:
        assert store.transaction(lambda conn: conn.execute("PRAGMA temp_store").fetchone()) == (2,)  # MEMORY
        gate = threading.Event()
        blocker = threading.Thread(target=store.transaction, args=(lambda conn: gate.wait(5),))
        blocker.start()  # holds the writer, so that the next three operations form one group
        time.sleep(0.2)
        first = store.land_async(b"MSH|first", content_type=CONTENT_HL7V2, source="t", headers={})

        def half_then_fail(conn: sqlite3.Connection) -> None:
            for i in range(50):  # enough changed pages for a statement journal to matter
                conn.execute(
                    "INSERT INTO messages (source, content_type, headers, payload, status, received_at, updated_at)"
                    " VALUES ('t', 'x', '{}', ?, 'received', 0, 0)",
                    (b"x" * 3000 + str(i).encode(),),
                )
            conn.execute("INSERT INTO messages (id, source) VALUES (1, 'duplicate')")  # IntegrityError

        failing = store._writer.submit(half_then_fail)
        last = store.land_async(b"MSH|last", content_type=CONTENT_HL7V2, source="t", headers={})
        gate.set()
        blocker.join(10)
        ids = [first.result(10), last.result(10)]
        with pytest.raises(TransientError):
            failing.result(10)
        assert [m.payload for m in store.unfinished(100)] == [b"MSH|first", b"MSH|last"]
        assert [m.id for m in store.unfinished(100)] == ids
    finally:
        store.close()
