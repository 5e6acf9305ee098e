"""Folder inbox: atomic pickup (settle interval, ignored names), landing, done/ and failed/ moves."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from engine.sources.inbox import FolderInbox, InboxSettings, name_hash
from engine.store import FAILED, PUBLISHED, MessageStore, Outcome, StoreSource


def _inbox(tmp_path: Path, store: MessageStore, settle: float = 0.0) -> FolderInbox:
    inbox = FolderInbox(InboxSettings(path=tmp_path / "in", settle_seconds=settle), store)
    store.add_listener(inbox.finished)
    return inbox


def test_pickup_waits_until_file_is_settled(tmp_path: Path, scout_messages: list[Path]) -> None:
    store = MessageStore(tmp_path / "m.db")
    inbox = _inbox(tmp_path, store, settle=0.3)
    data = scout_messages[0].read_bytes()
    target = tmp_path / "in" / "a.hl7"
    target.write_bytes(data[:50])
    assert inbox.scan_once() == 0  # first sight
    with target.open("ab") as fh:  # still being written: size/mtime change
        fh.write(data[50:])
    assert inbox.scan_once() == 0
    assert inbox.scan_once() == 0  # unchanged but younger than the settle interval
    old = time.time() - 5
    os.utime(target, (old, old))
    assert inbox.scan_once() == 0  # signature changed by utime: one more scan
    assert inbox.scan_once() == 1
    assert not target.exists()
    [env] = StoreSource(store).poll(10, 0.0)
    assert env.payload == data and env.source == "inbox"
    assert env.headers == {
        "file.sha256": name_hash("a.hl7"), "message.index": "1", "message.count": "1",
        "hl7.control-id": data.split(b"|")[9].decode(),
    }  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "in" / ".landed").iterdir()) == [f"{env.id}.json", f"{env.id}__a.hl7"]
    store.close()


def test_ignored_names_are_left_alone(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    inbox = _inbox(tmp_path, store)
    for name in (".hidden.hl7", "x.tmp", "y.part", "z.HL7.partial"):
        (tmp_path / "in" / name).write_bytes(b"MSH|")
    inbox.scan_once()
    inbox.scan_once()
    assert store.counts()["received"] == 0
    assert len([p for p in (tmp_path / "in").iterdir() if p.is_file()]) == 4
    store.close()


def test_finished_files_move_to_done_or_failed(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    inbox = _inbox(tmp_path, store)
    (tmp_path / "in" / "good.hl7").write_bytes(b"MSH|good")
    (tmp_path / "in" / "bad.hl7").write_bytes(b"MSH|bad")
    inbox.scan_once()
    assert inbox.scan_once() == 2
    source = StoreSource(store)
    envs = {e.headers["file.sha256"]: e for e in source.poll(10, 0.0)}
    source.finish(
        [
            (envs[name_hash("good.hl7")], Outcome(PUBLISHED, outputs=("bundle-1",))),
            (envs[name_hash("bad.hl7")], Outcome(FAILED, "why", "ParseError")),
        ]
    )
    assert (tmp_path / "in" / "done" / "good.hl7").read_bytes() == b"MSH|good"
    assert (tmp_path / "in" / "failed" / "bad.hl7").read_bytes() == b"MSH|bad"
    assert list((tmp_path / "in" / ".landed").iterdir()) == []
    report = json.loads((tmp_path / "in" / "failed" / "bad.hl7.report.json").read_text())
    assert [(m["index"], m["outcome"], m["reason"]) for m in report["messages"]] == [(1, "rejected", "why")]
    store.close()


def test_recover_after_crash(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    inbox = _inbox(tmp_path, store)
    (tmp_path / "in" / "a.hl7").write_bytes(b"MSH|a")
    (tmp_path / "in" / "b.hl7").write_bytes(b"MSH|b")
    inbox.scan_once()
    inbox.scan_once()
    envs = {e.headers["file.sha256"]: e for e in StoreSource(store).poll(10, 0.0)}
    # crash: the store recorded "a" as published but the process died before moving the file
    a_id = envs[name_hash("a.hl7")].id
    store.finish([(envs[name_hash("a.hl7")], Outcome(PUBLISHED, outputs=("bundle-a",)))])
    os.replace(tmp_path / "in" / "done" / "a.hl7", tmp_path / "in" / ".landed" / f"{a_id}__a.hl7")
    (tmp_path / "in" / "done" / "a.hl7.report.json").unlink()
    (tmp_path / "in" / ".landed" / f"{a_id}.json").write_text(
        json.dumps({"file": "a.hl7", "file_hash": name_hash("a.hl7"),
                    "messages": [{"index": 1, "envelope_id": a_id, "control_id": ""}]}))  # fmt: skip
    (tmp_path / "in" / ".landed" / "999__orphan.hl7").write_bytes(b"MSH|orphan")  # not in the store
    store.close()

    store = MessageStore(tmp_path / "m.db")
    inbox = _inbox(tmp_path, store)
    inbox.recover(lambda eid: m.status if (m := store.get(eid)) else None)
    assert (tmp_path / "in" / "done" / "a.hl7").exists()
    assert (tmp_path / "in" / "orphan.hl7").exists()  # back in the inbox to be landed again
    b_id = envs[name_hash("b.hl7")].id
    assert sorted(p.name for p in (tmp_path / "in" / ".landed").iterdir()) == [f"{b_id}.json", f"{b_id}__b.hl7"]
    assert json.loads((tmp_path / "in" / "done" / "a.hl7.report.json").read_text())["counts"] == {"converted": 1}
    store.finish([(envs[name_hash("b.hl7")], Outcome(PUBLISHED, outputs=("bundle-b",)))])  # the worker goes on
    assert (tmp_path / "in" / "done" / "b.hl7").exists()
    store.close()
