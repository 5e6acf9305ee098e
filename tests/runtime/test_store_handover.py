"""Service speed seams of the message store: a conversion made for the MLLP acknowledgement is handed to the
worker (never converted twice), worker batches fill while ``linger`` lasts, and ``mark_mapped`` commits without
an fsync of its own yet survives a reopen."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from engine.outcomes import Conversion
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sinks.folder import FolderSink
from engine.sources.base import CONTENT_HL7V2
from engine.sources.mllp import MllpListener, MllpSettings
from engine.sources.mllp_framing import frame
from engine.store import FILTERED, MAPPED, PUBLISHED, MessageStore, StoreSource
from engine.store_source import PreparedConversions
from engine.worker import Worker
from tests.sources.source_helpers import TESTDATA

BULK = TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


class CountingConverter(Converter):
    """The real converter, counting the payloads it converts (which component converted what)."""

    def __init__(self) -> None:
        super().__init__(load_mapping_context(None))
        self.calls: list[bytes] = []
        self._lock = threading.Lock()

    def convert(self, data: bytes) -> Conversion:
        with self._lock:
            self.calls.append(data)
        return super().convert(data)


def _land(store: MessageStore, payload: bytes, conversion: object = None) -> str:
    extra = {"conversion": conversion} if conversion is not None else {}
    return store.land(payload, content_type=CONTENT_HL7V2, source="test", headers={}, **extra)  # type: ignore[arg-type]


def _messages(n: int) -> list[bytes]:
    lines = [line.rstrip(b"\r") for line in BULK.read_bytes().split(b"\n") if line.startswith(b"MSH")]
    return lines[:n]


def test_conversion_handed_over_with_the_row(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    try:
        done = Conversion(messages=1)
        pending: Future[Conversion | None] = Future()
        first, second, third = _land(store, b"MSH|a", done), _land(store, b"MSH|b", pending), _land(store, b"MSH|c")
        source = StoreSource(store)
        envelopes = source.poll(10, 0.0)
        assert [e.id for e in envelopes] == [first, second, third]
        threading.Timer(0.2, pending.set_result, args=(Conversion(messages=2),)).start()
        taken = source.take_prepared(envelopes)  # waits for the pending one
        assert taken[0] is done
        assert taken[1] is not None and taken[1].messages == 2
        assert taken[2] is None  # nothing handed over: the worker converts
        assert source.take_prepared(envelopes) == [None, None, None]  # taken once
    finally:
        store.close()


def test_hand_over_is_bounded_and_a_failed_future_means_convert_again() -> None:
    prepared = PreparedConversions(max_bytes=1000)
    for i in range(10):
        prepared.put(str(i), Conversion(messages=1))  # 256 bytes each: only the newest three fit
    assert len(prepared) == 3 and prepared.dropped == 7
    assert prepared.take("0") is None and prepared.take("9") is not None
    failed: Future[Conversion | None] = Future()
    failed.set_exception(RuntimeError("converter bug"))
    prepared.put("x", failed)
    assert prepared.take("x") is None


def test_ack_converted_message_is_converted_once(tmp_path: Path) -> None:
    """MLLP listener (ack: converted) -> store -> worker -> folder sink: one conversion per message in all."""
    messages = _messages(12)
    store = MessageStore(tmp_path / "m.db")
    converter = CountingConverter()
    listener = MllpListener(MllpSettings.from_mapping({"port": 0, "ack": "converted"}), store, converter=converter)
    listener.start()
    sink = FolderSink(tmp_path / "out")
    dead = FolderDeadLetters(tmp_path / "dlq", deferred=True)
    try:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
            for message in messages:
                sock.sendall(frame(message))
                data = b""
                while not data.endswith(b"\x1c\r"):
                    data += sock.recv(65536)
                assert b"MSA|AA|" in data or b"MSA|AR|" in data
        assert len(converter.calls) == len(messages)  # once each, for the ACK
        worker = Worker(StoreSource(store), converter, [sink], dead, batch_size=50)
        handled = 0
        deadline = time.monotonic() + 30
        while handled < len(messages) and time.monotonic() < deadline:
            handled += worker.run_once(timeout=1.0)
        counts = store.counts()
        assert counts[PUBLISHED] + counts[FILTERED] == len(messages)
        assert counts[PUBLISHED] > 0 and len(list((tmp_path / "out").glob("*.json"))) > 0
        assert len(converter.calls) == len(messages)  # the worker converted nothing again
        assert len(store.prepared) == 0
    finally:
        listener.stop()
        sink.close()
        dead.close()
        store.close()


def test_worker_converts_what_was_not_handed_over(tmp_path: Path) -> None:
    messages = _messages(3)
    store = MessageStore(tmp_path / "m.db")
    converter = CountingConverter()
    sink = FolderSink(tmp_path / "out")
    dead = FolderDeadLetters(tmp_path / "dlq", deferred=True)
    try:
        _land(store, messages[0], converter.convert(messages[0]))
        for message in messages[1:]:
            _land(store, message)
        assert Worker(StoreSource(store), converter, [sink], dead).run_once(timeout=0.0) == 3
        assert converter.calls == messages  # the first at "intake", the other two by the worker
    finally:
        sink.close()
        dead.close()
        store.close()


def test_poll_lingers_for_a_fuller_batch(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    try:
        _land(store, b"MSH|1")
        late = threading.Timer(0.1, lambda: [_land(store, f"MSH|{i}".encode()) for i in range(2, 5)])
        late.start()
        lingering = StoreSource(store, linger=2.0)
        got = lingering.poll(4, 5.0)
        assert [e.payload for e in got] == [b"MSH|1", b"MSH|2", b"MSH|3", b"MSH|4"]  # full before the linger ran out
        late.join()
        _land(store, b"MSH|5")
        started = time.monotonic()
        assert [e.payload for e in lingering.poll(4, 0.0)] == [b"MSH|5"]  # no timeout: no linger
        assert time.monotonic() - started < 1.0
    finally:
        store.close()


def test_mark_mapped_without_its_own_fsync_is_still_committed(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = MessageStore(db)
    eid = _land(store, b"MSH|x")
    store.mark_mapped([(eid, ["bundle-1"])])
    row = store.get(eid)
    assert row is not None and row.status == MAPPED and row.outputs == ["bundle-1"]
    _land(store, b"MSH|y")  # a durable commit after it (FULL again)
    store.close()
    reopened = MessageStore(db)
    try:
        again = reopened.get(eid)
        assert again is not None and again.status == MAPPED and again.attempts == 1
    finally:
        reopened.close()


def test_pooled_conversion_for_the_ack_is_handed_over(tmp_path: Path) -> None:
    """worker.processes > 0: the listener converts in the conversion processes (messages of concurrent connections
    gathered into one hand-over) and every stored message carries its conversion to the worker."""
    from engine.pooled import PooledConverter

    messages = _messages(16)
    expected = Converter(load_mapping_context(None))
    store = MessageStore(tmp_path / "m.db")
    pooled = PooledConverter(load_mapping_context(None), processes=1)
    listener = MllpListener(MllpSettings.from_mapping({"port": 0, "ack": "converted"}), store, converter=pooled)
    listener.start()
    answers: dict[bytes, bytes] = {}

    def send(share: list[bytes]) -> None:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
            for message in share:
                sock.sendall(frame(message))
                data = b""
                while not data.endswith(b"\x1c\r"):
                    data += sock.recv(65536)
                answers[message] = data

    try:
        senders = [threading.Thread(target=send, args=(messages[i::4],)) for i in range(4)]
        for t in senders:
            t.start()
        for t in senders:
            t.join(60)
        assert len(answers) == len(messages)
        for message, ack in answers.items():
            control_id = message.split(b"\r", 1)[0].split(b"|")[9]
            code = b"AA" if expected.convert(message).outputs else b"AR"
            assert b"MSA|" + code + b"|" + control_id in ack
        envelopes = StoreSource(store).poll(100, 0.0)
        assert len(envelopes) == len(messages)
        taken = StoreSource(store).take_prepared(envelopes)
        for env, conversion in zip(envelopes, taken, strict=True):
            assert conversion is not None  # handed over: the worker converts none of them
            assert [o.body for o in conversion.outputs] == [o.body for o in expected.convert(env.payload).outputs]
    finally:
        listener.stop()
        pooled.close()
        store.close()


def test_a_landing_given_up_before_its_commit_is_skipped(tmp_path: Path) -> None:
    """land_async's future cancelled while queued (the listener timed out or stopped): not stored, and the
    writer thread carries on with the others."""
    store = MessageStore(tmp_path / "m.db")
    try:
        gate = threading.Event()
        blocker = threading.Thread(target=store.transaction, args=(lambda conn: gate.wait(5),))
        blocker.start()  # holds the writer so that the next landing stays queued
        time.sleep(0.2)
        queued = store.land_async(b"MSH|gone", content_type=CONTENT_HL7V2, source="test", headers={})
        assert queued.cancel()
        gate.set()
        blocker.join(10)
        kept = _land(store, b"MSH|kept")
        assert [m.payload for m in store.unfinished(10)] == [b"MSH|kept"]
        assert store.get(kept) is not None and store.healthy()
    finally:
        store.close()


def test_dicom_scp_ack_converted_is_converted_once(tmp_path: Path) -> None:
    """C-STORE SCP (ack: converted) -> store -> worker: the conversion made for the C-STORE status goes to the
    worker with the row; a dataset the SCP could not convert (here: filtered ones too) is never converted twice."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    from engine.sources.dicom_scp import STATUS_NOT_A_REPORT, ScpSettings, StoreScp

    report = pydicom.dcmread(TESTDATA / "dicom-sr-dcmqi" / "sr.dcm")
    not_report = pydicom.dcmread(TESTDATA / "dicom-sr-openrem" / "ESR_non-dose.dcm")
    store = MessageStore(tmp_path / "m.db")
    converter = CountingConverter()
    scp = StoreScp(ScpSettings.from_mapping({"host": "127.0.0.1", "port": 0}), store, converter=converter)
    scp.start()
    sink = FolderSink(tmp_path / "out")
    dead = FolderDeadLetters(tmp_path / "dlq", deferred=True)
    try:
        ae = AE(ae_title="PYNETDICOM")
        for ds in (report, not_report):
            ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="ENGINE")
        try:
            assert assoc.send_c_store(report).Status == 0x0000
            assert assoc.send_c_store(not_report).Status == STATUS_NOT_A_REPORT
        finally:
            assoc.release()
        assert len(converter.calls) == 2  # once each, for the C-STORE status
        assert Worker(StoreSource(store), converter, [sink], dead).run_once(timeout=5.0) == 2
        counts = store.counts()
        assert (counts[PUBLISHED], counts[FILTERED]) == (1, 1)
        assert len(list((tmp_path / "out").glob("*.json"))) == 1
        assert len(converter.calls) == 2  # the worker converted nothing again
        assert len(store.prepared) == 0
    finally:
        scp.stop(timeout=5)
        sink.close()
        dead.close()
        store.close()


def test_convert_processes_hand_over_the_configured_model(tmp_path: Path) -> None:
    """sources.mllp.convert_processes with a model other than ``document``: the conversion processes convert with
    the service's model too, so the Bundles handed to the worker are the ones the worker would have made."""
    messages = _messages(2)
    context = load_mapping_context(None)
    expected = Converter(context, "harmonized")
    assert [o.body for o in expected.convert(messages[0]).outputs] != [
        o.body for o in Converter(context).convert(messages[0]).outputs
    ]  # the models differ for this message
    store = MessageStore(tmp_path / "m.db")
    listener = MllpListener(
        MllpSettings.from_mapping({"port": 0, "ack": "converted", "convert_processes": 1}), store, converter=expected
    )
    listener.start()
    try:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=60) as sock:
            for message in messages:
                sock.sendall(frame(message))
                data = b""
                while not data.endswith(b"\x1c\r"):
                    data += sock.recv(65536)
        envelopes = StoreSource(store).poll(10, 0.0)
        taken = StoreSource(store).take_prepared(envelopes)
        for env, conversion in zip(envelopes, taken, strict=True):
            assert conversion is not None
            assert [o.body for o in conversion.outputs] == [o.body for o in expected.convert(env.payload).outputs]
    finally:
        listener.stop()
        store.close()
