"""Review findings on the ingress side: what happens when a landing fails *permanently*.

``KafkaLanding.land`` raises :class:`engine.errors.PermanentError` for a record Kafka can never take (for
example larger than ``kafka.max_request_size``, 1 MiB by default: an Encapsulated PDF SR or an HL7 message
with an embedded PDF). ``PermanentLanding`` below raises exactly what ``KafkaLanding`` raises then
(``engine.kafka._producer.classify`` of ``MessageSizeTooLargeError``); everything else is real (folder inbox,
asyncio MLLP listener over 127.0.0.1, pynetdicom SCP and SCU), and the other files land in the real
:class:`engine.store.MessageStore`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hl7.client import MLLPClient
from kafka import errors as kerr
from pydicom.uid import ExplicitVRLittleEndian

from engine.kafka._producer import classify
from engine.sources.dicom_scp import STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS, ScpSettings, StoreScp
from engine.sources.inbox import FolderInbox, InboxSettings, name_hash
from engine.sources.mllp import MllpListener, MllpSettings
from engine.store import MessageStore, StoreSource
from tests.sources.test_dicom_store_scp import SAMPLES, scu
from tests.sources.test_mllp_listener import bulk_messages, exchange, field, parse_ack


class PermanentLanding:
    """Lands into a real MessageStore, except payloads containing ``poison``: those fail like KafkaLanding
    fails for a record above max_request_size (PermanentError)."""

    def __init__(self, store: MessageStore, poison: bytes) -> None:
        self.store = store
        self.poison = poison
        self.calls = 0

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        self.calls += 1
        if self.poison in payload:
            raise classify(kerr.MessageSizeTooLargeError(), "kafka landing hl7.raw")
        return self.store.land(payload, content_type=content_type, source=source, headers=headers)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MessageStore]:
    s = MessageStore(tmp_path / "m.db")
    yield s
    s.close()


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_inbox_survives_a_file_the_landing_rejects_permanently(tmp_path: Path, store: MessageStore) -> None:
    """Finding: a PermanentError from land() escaped FolderInbox._take; _loop catches only OSError, so the inbox
    thread died and no later file was ever landed (silently: the engine kept running)."""
    root = tmp_path / "in"
    inbox = FolderInbox(
        InboxSettings(path=root, settle_seconds=0.0, scan_interval=0.05),
        PermanentLanding(store, b"POISON"),
    )
    (root / "a-big.hl7").write_bytes(b"MSH|^~\\&|POISON")
    (root / "b-good.hl7").write_bytes(b"MSH|^~\\&|good")
    inbox.start()
    try:
        assert _wait(lambda: store.counts()["received"] == 1), "the good file was never landed"
        time.sleep(0.2)
        assert inbox.running, "the inbox thread died on one permanently rejected file"
        (root / "c-later.hl7").write_bytes(b"MSH|^~\\&|later")
        assert _wait(lambda: store.counts()["received"] == 2), "a file dropped later was never landed"
    finally:
        inbox.stop()
    # the rejected file keeps its original bytes in failed/ (like a file above max_bytes)
    assert (root / "failed" / "a-big.hl7").read_bytes() == b"MSH|^~\\&|POISON"
    assert {e.headers["file.sha256"] for e in StoreSource(store).poll(10, 0.0)} == {
        name_hash("b-good.hl7"),
        name_hash("c-later.hl7"),
    }


def test_inbox_unreadable_file_does_not_block_the_others(
    tmp_path: Path, store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding: an OSError other than FileNotFoundError while reading one file (EACCES: a file dropped by another
    user with mode 600) aborted scan_once before ``self._seen`` was saved, on every scan: the files sorted after
    it, and every file dropped later, were never landed. (Running as root, so EACCES is injected.)"""
    root = tmp_path / "in"
    inbox = FolderInbox(InboxSettings(path=root, settle_seconds=0.0), store)
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "a-locked.hl7":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    (root / "a-locked.hl7").write_bytes(b"MSH|locked")
    (root / "b-good.hl7").write_bytes(b"MSH|good")
    for _ in range(3):
        with contextlib.suppress(OSError):  # what FolderInbox._loop does: log and scan again
            inbox.scan_once()
    (root / "c-later.hl7").write_bytes(b"MSH|later")
    for _ in range(3):
        with contextlib.suppress(OSError):
            inbox.scan_once()
    assert store.counts()["received"] == 2
    assert (root / "a-locked.hl7").exists()  # left in place, retried at every scan


@pytest.fixture
def mllp() -> Iterator[list[MllpListener]]:
    started: list[MllpListener] = []
    yield started
    for listener in started:
        listener.stop(timeout=2)


def test_mllp_permanent_landing_failure_is_a_reject_not_a_retry(store: MessageStore, mllp: list[MllpListener]) -> None:
    """Finding: PermanentError from land() fell into ``except Exception`` and was answered AE ("retry"): the sender
    resends a message that can never be stored, forever. It must be AR (reject, do not resend)."""
    message = bulk_messages()[0]
    landing = PermanentLanding(store, b"MSH")  # every HL7 message is "too large"
    listener = MllpListener(MllpSettings.from_mapping({"host": "127.0.0.1", "port": 0}), landing)
    listener.start()
    mllp.append(listener)
    with MLLPClient("127.0.0.1", listener.port) as client:
        ack = parse_ack(exchange(client, message))
    assert field(ack, "MSA", 1) == "AR"
    assert "not stored" in field(ack, "MSA", 3)
    assert store.counts()["received"] == 0


def test_dicom_permanent_landing_failure_is_a_failure_not_out_of_resources(store: MessageStore) -> None:
    """Finding: PermanentError from land() was answered 0xA700 Out of Resources, which tells the SCU to retry
    later: a dataset Kafka can never take is resent forever. It must be a failure status (no retry)."""
    landing = PermanentLanding(store, b"DICM")
    scp = StoreScp(ScpSettings.from_mapping({"host": "127.0.0.1", "port": 0}), landing)
    scp.start()
    try:
        original = pydicom.dcmread(SAMPLES[0])
        assoc = scu((original.SOPClassUID, ExplicitVRLittleEndian)).associate("127.0.0.1", scp.port, ae_title="ENGINE")
        try:
            status = assoc.send_c_store(original).Status
        finally:
            assoc.release()
    finally:
        scp.stop(timeout=5)
    assert landing.calls == 1
    assert status not in (STATUS_SUCCESS, STATUS_OUT_OF_RESOURCES)
    assert status & 0xF000 in (0xC000, 0xA000) or status == 0x0110  # a Failure status (PS3.4 B.2.3)
    assert store.counts()["received"] == 0
