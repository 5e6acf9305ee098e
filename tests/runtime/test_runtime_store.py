"""The SQLite message store: durable landing, status, resume after restart and after SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.errors import TransientError
from engine.sources.base import CONTENT_HL7V2
from engine.store import FAILED, FILTERED, PUBLISHED, MessageStore, Outcome, StoreSource


def _land(store: MessageStore, payload: bytes, **headers: str) -> str:
    return store.land(payload, content_type=CONTENT_HL7V2, source="test", headers=headers)


def test_land_reopen_and_resume(tmp_path: Path) -> None:
    db = tmp_path / "store" / "messages.db"
    store = MessageStore(db)
    ids = [_land(store, f"MSH|^~\\&|{i}".encode(), control_id=str(i)) for i in range(5)]
    source = StoreSource(store)
    first = source.poll(2, 0.0)
    assert [e.id for e in first] == ids[:2]
    source.finish([(first[0], Outcome(PUBLISHED, outputs=("b1",)))])  # one done, one in flight
    store.close()

    store = MessageStore(db)  # "restart": the in-flight one and the never-polled ones come back
    source = StoreSource(store)
    resumed = source.poll(10, 0.0)
    assert [e.id for e in resumed] == ids[1:]
    assert resumed[0].payload == b"MSH|^~\\&|1"
    assert resumed[0].headers == {"control_id": "1"}
    assert source.poll(10, 0.0) == []  # handed out once until acked
    assert store.counts() == {"received": 4, "mapped": 0, "published": 1, "failed": 0, "filtered": 0}
    store.close()


def test_status_transitions_and_requeue(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    source = StoreSource(store)
    a, b = _land(store, b"a"), _land(store, b"b")
    envs = source.poll(10, 0.0)
    source.mark_mapped([(envs[0], ["bundle-a"]), (envs[1], [])])
    assert store.get(a).status == "mapped"  # type: ignore[union-attr]
    source.finish(
        [(envs[0], Outcome(PUBLISHED, outputs=("bundle-a",))), (envs[1], Outcome(FAILED, "bad", "ParseError"))]
    )
    msg_b = store.get(b)
    assert msg_b is not None and (msg_b.status, msg_b.error_reason, msg_b.error_class) == (FAILED, "bad", "ParseError")
    assert store.get(a).outputs == ["bundle-a"]  # type: ignore[union-attr]
    assert source.poll(10, 0.0) == []

    assert store.requeue(dead_letters=True) == 1
    again = source.poll(10, 0.0)
    assert [e.id for e in again] == [b]
    assert store.get(b).replays == 1  # type: ignore[union-attr]
    assert store.requeue(ids=[a]) == 1
    assert store.requeue(since=0.0, until=1.0) == 0  # nothing received in 1970
    store.close()


def test_filtered_status_counted_by_reason_and_replayable(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    source = StoreSource(store)
    ids = [_land(store, bytes([65 + i])) for i in range(3)]
    envs = source.poll(10, 0.0)
    lab = "laboratory result (specimen or lab service section), not an imaging report"
    source.finish([(e, Outcome(FILTERED, lab, "UnsupportedMessage")) for e in envs[:2]]
                  + [(envs[2], Outcome(FAILED, "no PID segment", "InvalidReport"))])  # fmt: skip
    assert store.counts()["filtered"] == 2 and store.counts()["failed"] == 1
    assert store.reasons("filtered") == {lab: 2} and store.reasons("failed") == {"no PID segment": 1}
    assert source.poll(10, 0.0) == []  # finished: not handed out again
    assert store.requeue(ids=[ids[0]]) == 1  # a replay (e.g. after a mapping change) picks it up again
    assert [e.id for e in source.poll(10, 0.0)] == [ids[0]]
    store.close()


def test_concurrent_landers_group_commit(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    ids: list[str] = []
    lock = threading.Lock()

    def lander(n: int) -> None:
        for i in range(50):
            eid = _land(store, f"{n}-{i}".encode())
            with lock:
                ids.append(eid)

    threads = [threading.Thread(target=lander, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 400
    assert store.counts()["received"] == 400
    store.close()


def test_land_after_close_is_transient(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    store.close()
    with pytest.raises(TransientError):
        _land(store, b"x")


def test_land_on_unwritable_store_is_transient(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores file permissions; make the database read-only through SQLite itself instead
        store = MessageStore(tmp_path / "m.db")
        store._submit(lambda conn: conn.execute("PRAGMA query_only=ON"))
        with pytest.raises(TransientError):
            _land(store, b"x")
        store.close()
        return
    (tmp_path / "ro").mkdir()
    store = MessageStore(tmp_path / "ro" / "m.db")
    os.chmod(tmp_path / "ro" / "m.db", 0o444)
    with pytest.raises(TransientError):
        _land(store, b"x")
    store.close()


def test_landed_messages_survive_sigkill(tmp_path: Path) -> None:
    """A process killed right after land() returned: every returned id is in the file."""
    db = tmp_path / "m.db"
    script = f"""
import os, signal, sys
from engine.store import MessageStore
store = MessageStore({str(db)!r})
for i in range(200):
    eid = store.land(b"MSH|%d" % i, content_type="x", source="kill", headers={{}})
    print(eid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9
    acknowledged = proc.stdout.split()
    assert len(acknowledged) == 200
    store = MessageStore(db)
    for eid in acknowledged:
        msg = store.get(eid)
        assert msg is not None and msg.status == "received"
    assert len(StoreSource(store).poll(500, 0.0)) == 200
    store.close()


def test_pause_and_resume_redeliver_unacked(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    source = StoreSource(store)
    _land(store, b"a")
    held = source.poll(10, 0.0)
    source.pause()
    _land(store, b"b")
    assert source.poll(10, 0.05) == []
    source.resume()  # forget the handed-out ones: they come back (seek back)
    assert [e.payload for e in source.poll(10, 0.0)] == [b"a", b"b"]
    assert held
    store.close()


def test_poll_wakes_up_on_landing(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    source = StoreSource(store, poll_interval=5.0)
    timer = threading.Timer(0.2, lambda: _land(store, b"late"))
    timer.start()
    got = source.poll(10, 3.0)
    assert [e.payload for e in got] == [b"late"]
    store.close()
