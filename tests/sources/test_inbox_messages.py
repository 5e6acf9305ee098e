"""Inbox: one outcome per message inside a file, sub-folders, per-file reports, dead-letter sidecars per message.

Real store, real worker, real converter (the shipped sender profiles), real folder sink and dead letters.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from engine.observability.metrics import Metrics
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sinks.folder import FolderSink
from engine.sources.door import DoorRejects
from engine.sources.inbox import FolderInbox, InboxSettings, name_hash
from engine.store import MessageStore, StoreSource
from engine.worker import RetryPolicy, Worker
from tests.sources.source_helpers import TESTDATA

BULK = TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"
CONVERTER = Converter(load_mapping_context(None))


def _messages() -> tuple[list[bytes], list[bytes]]:
    """(reports, status-only ORUs) from the WashU bulk feed (one message per line)."""
    lines = [line.rstrip(b"\r") + b"\r" for line in BULK.read_bytes().split(b"\n") if line.startswith(b"MSH")]
    reports = [m for m in lines[:80] if CONVERTER.convert(m).outputs]
    status_only = [m for m in lines if not CONVERTER.convert(m).outputs]
    return reports, status_only


class Engine:
    def __init__(self, tmp_path: Path) -> None:
        self.store = MessageStore(tmp_path / "store" / "messages.db")
        self.metrics = Metrics()
        self.dlq = tmp_path / "dlq"
        dead_letters = FolderDeadLetters(self.dlq)
        self.inbox = FolderInbox(
            InboxSettings(path=tmp_path / "in", settle_seconds=0.0, max_bytes=200_000),
            self.store,
            door=DoorRejects(dead_letters, self.metrics),
        )
        self.store.add_listener(self.inbox.finished)
        policy = RetryPolicy(attempts=2, initial=0.01, maximum=0.02, jitter=0.0, backpressure=0.1)
        self.worker = Worker(StoreSource(self.store), CONVERTER, [FolderSink(tmp_path / "out")], dead_letters,
                             policy=policy, metrics=self.metrics, poll_timeout=0.0)  # fmt: skip

    def run(self) -> None:
        self.inbox.scan_once()
        self.inbox.scan_once()
        while self.worker.run_once(timeout=0.0):
            pass


def test_one_outcome_per_message_and_subfolders(tmp_path: Path) -> None:
    reports, status_only = _messages()
    broken = reports[3].rstrip(b"\r") + b"\rNTE|1||\x00\x00\r"  # NUL bytes: conversion fails (ParseError)
    feed = b"".join([reports[0], status_only[0], reports[1], broken, reports[2]])
    engine = Engine(tmp_path)
    nested = tmp_path / "in" / "2026" / "site a"
    nested.mkdir(parents=True)
    (nested / "Doe^John.hl7").write_bytes(feed)  # a name with PHI in it
    (tmp_path / "in" / "none.hl7").write_bytes(status_only[1] + status_only[2])
    engine.run()
    try:
        done = tmp_path / "in" / "done" / "2026" / "site a" / "Doe^John.hl7"
        assert done.read_bytes() == feed  # moved whole, sub-folder kept, because messages 1, 3 and 5 converted
        report = json.loads(done.with_name(done.name + ".report.json").read_text())
        outcomes = [(m["index"], m["outcome"]) for m in report["messages"]]
        assert outcomes == [(1, "converted"), (2, "filtered"), (3, "converted"), (4, "rejected"), (5, "converted")]
        assert report["counts"] == {"converted": 3, "filtered": 1, "rejected": 1}
        ids = [m["control_id"] for m in report["messages"]]
        assert ids == [m.split(b"|")[9].decode() for m in (reports[0], status_only[0], reports[1], broken, reports[2])]
        assert all(m["bundles"] for m in report["messages"] if m["outcome"] == "converted")
        assert "NUL" in report["messages"][3]["reason"]
        # no message converted: failed/, with its report
        failed = tmp_path / "in" / "failed" / "none.hl7"
        assert json.loads(failed.with_name("none.hl7.report.json").read_text())["counts"] == {"filtered": 2}
        # the one dead letter names the message index and control id, and never the file name
        [sidecar_path] = engine.dlq.glob("*.json")
        sidecar = json.loads(sidecar_path.read_text())
        headers = sidecar["headers"]
        assert (headers["message.index"], headers["message.count"]) == ("4", "5")
        assert headers["hl7.control-id"] == ids[3]
        assert headers["file.sha256"] == name_hash("2026/site a/Doe^John.hl7")
        assert "Doe" not in sidecar_path.read_text() and (engine.dlq / sidecar["payload_file"]).read_bytes() == broken
        assert len(list((tmp_path / "out").glob("*.json"))) == 3
        assert list((tmp_path / "in" / ".landed").iterdir()) == []
    finally:
        engine.store.close()


def test_too_large_file_is_failed_counted_and_kept(tmp_path: Path) -> None:
    reports, _ = _messages()
    engine = Engine(tmp_path)
    big = b"".join(reports) * 8
    assert len(big) > 200_000
    (tmp_path / "in" / "big.hl7").write_bytes(big)
    engine.run()
    try:
        assert (tmp_path / "in" / "failed" / "big.hl7").read_bytes() == big
        value = engine.metrics.registry.get_sample_value(
            "engine_ingress_rejected_total", {"source": "inbox", "reason": "too-large"}
        )
        assert value == 1.0
        [sidecar] = [json.loads(p.read_text()) for p in engine.dlq.glob("*.json")]
        assert sidecar["headers"]["door.size"] == str(len(big)) and sidecar["headers"]["door.truncated"] == "true"
        assert sidecar["error_class"] == "IngressRejected"
        assert engine.store.counts()["received"] == 0
    finally:
        engine.store.close()
