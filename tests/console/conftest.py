"""Fixtures for the console tests: a real message store with real conversions through the real worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.console.api import Destinations
from engine.console.settings import ConsoleSettings, ConsoleUser
from engine.convert import Converter
from engine.message_index import MessageIndexer
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sinks.folder import FolderSink
from engine.store import MessageStore, StoreSource
from engine.worker import RetryPolicy, Worker
from pipelines.context import MappingContext

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"

GOOD_ORU = (
    b"MSH|^~\\&|RIS|HOSP|ENGINE|X|20240101120000||ORU^R01^ORU_R01|CTRL-GOOD-1|P|2.5.1\r"
    b"PID|1||123^^^H||DOE^JOHN\r"
    b"OBR|1|P1|F1|71020^CXR^L|||20240101|||||||||||ACC-GOOD-1||||20240101||CR|F\r"
    b"OBX|1|TX|&GDT|1|No acute findings.||||||F\r"
)
#: An ORU^R01 cut after its MSH segment (a ParseError: "truncated message"), i.e. a dead letter.
DEAD_ORU = b"MSH|^~\\&|RIS|HOSP|ENGINE|X|20240101120000||ORU^R01^ORU_R01|CTRL-DEAD-1|P|2.5.1\r"
PASSWORDS = {"ops": "ops-secret", "viewer": "viewer-secret", "doc": "doc-secret"}


def console_settings(audit: Path | None = None) -> ConsoleSettings:
    return ConsoleSettings(
        users=(
            ConsoleUser("ops", frozenset({"operator"}), password=PASSWORDS["ops"]),
            ConsoleUser("viewer", frozenset(), password=PASSWORDS["viewer"]),
            ConsoleUser("doc", frozenset({"operator", "phi"}), password=PASSWORDS["doc"], token="doc-token"),
        ),
        audit_log=audit,
    )


class Deployment:
    """A store, folder sink, dead letters and the real worker, processing on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = MessageStore(root / "store" / "messages.db", indexer=MessageIndexer(MappingContext()))
        self.outbox = root / "outbox"
        self.worker = Worker(
            StoreSource(self.store, poll_interval=0.05),
            Converter(MappingContext()),
            [FolderSink(self.outbox)],
            FolderDeadLetters(root / "dlq"),
            policy=RetryPolicy(attempts=1, initial=0, maximum=0, jitter=0, backpressure=0.01),
            poll_timeout=0.05,
        )
        self.audit = root / "audit.jsonl"
        self.destinations = Destinations(folder=self.outbox)

    def land(self, payload: bytes, source: str = "mllp", content_type: str = "application/hl7-v2") -> str:
        return self.store.land(payload, content_type=content_type, source=source, headers={"test": "1"})

    def process(self) -> None:
        while self.worker.run_once(timeout=0.0):
            pass

    def app(self) -> Any:
        from engine.console.server import create_app

        return create_app(console_settings(), self.store, self.destinations, self.audit)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(tmp_path)
    yield dep
    dep.store.close()
