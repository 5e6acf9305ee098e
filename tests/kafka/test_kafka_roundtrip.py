"""Against a real broker: landing -> raw topic -> KafkaSource -> ack/commit; restart and resume; sink; DLQ."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from engine.convert import Output
from engine.errors import PermanentError, TransientError
from engine.kafka import KafkaDeadLetters, KafkaLanding, KafkaPosition, KafkaSettings, KafkaSink, KafkaSource
from engine.sources.base import CONTENT_HL7V2, Envelope
from tests.kafka.kafka_helpers import committed_offsets, create_topics, headers_of, poll_until, read_topic

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "hl7v2-washu-scout" / "messages"

Factory = Callable[..., KafkaSettings]


def hl7(n: int) -> bytes:
    return (
        f"MSH|^~\\&|RIS|HOSP|ENGINE|HOSP|20250101120000||ORU^R01|CTRL{n:04d}|P|2.5\r"
        f"OBR|1||ACC{n:04d}|RAD^CT HEAD\r"
    ).encode()


def key_of(payload: bytes) -> str:
    return hashlib.sha256(b"urn:oid:1.2.3|" + payload.split(b"|")[10]).hexdigest()


def land(settings: KafkaSettings, count: int) -> list[str]:
    landing = KafkaLanding(settings, key_function=key_of)
    try:
        return [
            landing.land(hl7(i), content_type=CONTENT_HL7V2, source="mllp", headers={"hl7.control-id": f"CTRL{i:04d}"})
            for i in range(count)
        ]
    finally:
        landing.close()


def test_land_consume_ack_commits_the_watermark(make_settings: Factory, bootstrap: str) -> None:
    settings = make_settings()
    ids = land(settings, 5)
    assert ids == [f"{settings.hl7_topic}:0:{i}" for i in range(5)], "land returns topic:partition:offset"

    source = KafkaSource(settings)
    try:
        envelopes = poll_until(source, 5)
        assert [e.id for e in envelopes] == ids
        assert [e.payload for e in envelopes] == [hl7(i) for i in range(5)]
        first = envelopes[0]
        assert first.content_type == CONTENT_HL7V2 and first.source == "kafka"
        assert first.headers["hl7.control-id"] == "CTRL0000" and first.headers["source"] == "mllp"
        assert isinstance(first.position, KafkaPosition) and first.position.key == key_of(hl7(0)).encode()
        assert committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 1) == {0: None}
        source.ack(envelopes)
        assert committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 1) == {0: 5}
    finally:
        source.close()


def test_restart_resumes_at_the_watermark_and_never_commits_past_a_gap(make_settings: Factory, bootstrap: str) -> None:
    settings = make_settings()
    land(settings, 10)
    first = KafkaSource(settings)
    try:
        envelopes = poll_until(first, 10)
        assert len(envelopes) == 10
        first.ack([e for e in envelopes if not e.id.endswith(":4")])  # offset 4 still unfinished
        assert committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 1) == {0: 4}
    finally:
        first.close()  # a crash or shutdown with 4 unfinished: nothing past it may be committed
    assert committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 1) == {0: 4}

    second = KafkaSource(settings)
    try:
        again = poll_until(second, 6)
        assert [e.id.rsplit(":", 1)[1] for e in again] == ["4", "5", "6", "7", "8", "9"], "nothing lost"
        second.ack(again)
        assert second.poll(10, 1.0) == []
    finally:
        second.close()
    assert committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 1) == {0: 10}


def test_ack_from_another_thread_commits_on_the_next_poll(make_settings: Factory, bootstrap: str) -> None:
    import threading

    settings = make_settings()
    land(settings, 3)
    source = KafkaSource(settings)
    try:
        envelopes = poll_until(source, 3)
        worker = threading.Thread(target=source.ack, args=(envelopes,))
        worker.start()
        worker.join()
        assert committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 1) == {0: None}
        source.poll(10, 0.2)  # the poll thread commits
        assert committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 1) == {0: 3}
    finally:
        source.close()


def test_pause_stops_delivery_and_resume_continues(make_settings: Factory) -> None:
    settings = make_settings()
    land(settings, 4)
    source = KafkaSource(settings)
    try:
        got = poll_until(source, 2)
        source.pause()
        assert source.poll(10, 1.0) == []
        source.resume()
        got += poll_until(source, 4 - len(got))
        assert sorted(int(e.id.rsplit(":", 1)[1]) for e in got) == [0, 1, 2, 3]
    finally:
        source.close()


def output(n: int, body: bytes | None = None) -> Output:
    return Output(
        bundle_id=f"bundle-{n}", body=body or b'{"resourceType":"Bundle","id":"bundle-%d"}' % n,
        report_id=f"report-{n}", partition_key=hashlib.sha256(f"acc|{n}".encode()).hexdigest(), kind="document",
        ids={"control_id": f"CTRL{n:04d}", "accession_hash": "ab" * 8},
    )


def envelope(n: int) -> Envelope:
    return Envelope(id=f"raw:0:{n}", payload=hl7(n), content_type=CONTENT_HL7V2, source="mllp", received_at=0.0)


def test_sink_publishes_body_with_hashed_key_and_provenance_headers(make_settings: Factory, bootstrap: str) -> None:
    settings = make_settings()
    sink = KafkaSink(settings)
    try:
        for n in range(3):
            sink.write(output(n), envelope(n))
        sink.flush()
        assert sink.written == 3
    finally:
        sink.close()
    records = read_topic(bootstrap, settings.output_topic, expect=3)
    assert [r.value for r in records] == [output(n).body for n in range(3)]
    assert [r.key.decode() for r in records] == [output(n).partition_key for n in range(3)]
    h = headers_of(records[1])
    assert h["content-type"] == "application/fhir+json"
    assert h["engine.envelope-id"] == "raw:0:1" and h["source"] == "mllp"
    assert h["hl7.control-id"] == "CTRL0001" and h["engine.bundle-id"] == "bundle-1"
    assert h["engine.pipeline.version"]
    assert "ACC0001" not in repr(records[1].headers) + repr(records[1].key), "no business identifiers in clear"


def test_sink_flush_raises_permanent_for_a_record_the_broker_refuses(
    make_settings: Factory, admin: KafkaAdminClient, kafka_broker_instance: Any
) -> None:
    if kafka_broker_instance.kind == "tansu":
        pytest.skip("Tansu does not enforce the topic's max.message.bytes")
    settings = make_settings()
    small = f"{settings.output_topic}.small"
    create_topics(admin, {small: 1}, {"max.message.bytes": "2048"})
    sink = KafkaSink(settings, topic=small)
    try:
        sink.write(output(1, body=b"x" * 20_000), envelope(1))
        with pytest.raises(PermanentError, match="rejected by Kafka"):
            sink.flush()
        sink.write(output(2), envelope(2))  # the sink stays usable (a poisoned producer is replaced)
        sink.flush()
        assert sink.written == 1
    finally:
        sink.close()


def test_unreachable_broker_is_transient() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = KafkaSettings(
        bootstrap_servers=(f"127.0.0.1:{port}",), bootstrap_timeout_ms=1000, max_block_ms=1000,
        delivery_timeout_s=2, request_timeout_ms=2000,
    )
    with pytest.raises(TransientError, match="cannot reach"):
        KafkaLanding(settings)
    with pytest.raises(TransientError, match="cannot reach"):
        KafkaSource(settings)


def test_dead_letters_keep_original_bytes_key_and_error_headers(make_settings: Factory, bootstrap: str) -> None:
    settings = make_settings()
    land(settings, 2)
    source = KafkaSource(settings)
    dlq = KafkaDeadLetters(settings)
    try:
        envelopes = poll_until(source, 2)
        bad = envelopes[1]
        dlq.put(bad, bad.payload, "PID segment missing\nat line 2", "ParseError")
        source.ack(envelopes)
    finally:
        dlq.close()
        source.close()
    (record,) = read_topic(bootstrap, f"{settings.hl7_topic}.dlq", expect=1)
    assert record.value == hl7(1), "dead letter value is the original bytes, unchanged"
    assert record.key == key_of(hl7(1)).encode(), "same key as the source record"
    h = headers_of(record)
    assert h["dlq.original.topic"] == settings.hl7_topic
    assert (h["dlq.original.partition"], h["dlq.original.offset"]) == ("0", "1")
    assert h["dlq.error.class"] == "ParseError"
    assert h["dlq.error.message"] == "PID segment missing at line 2"
    assert datetime.fromisoformat(h["dlq.failed.at"].replace("Z", "+00:00")).tzinfo is not None
    assert h["engine.envelope-id"] == bad.id and h["hl7.control-id"] == "CTRL0001"


def test_landing_keys_by_the_converters_partition_key_when_it_exists(make_settings: Factory, bootstrap: str) -> None:
    from engine import convert

    settings = make_settings()
    payload = next(iter(sorted(SAMPLES.glob("*.hl7")))).read_bytes()
    landing = KafkaLanding(settings)  # default key function: engine.convert.partition_key_for, if provided
    try:
        landing.land(payload, content_type=CONTENT_HL7V2, source="mllp", headers={})
    finally:
        landing.close()
    (record,) = read_topic(bootstrap, settings.hl7_topic, expect=1)
    key_fn = getattr(convert, "partition_key_for", None)
    if key_fn is None:
        assert record.key is None, "without partition_key_for the raw record is produced without a key"
    else:
        assert record.key == key_fn(payload).encode()
        assert len(record.key) == 64, "sha256 hex, never the accession itself"
    assert record.value == payload
    assert headers_of(record)["content-type"] == CONTENT_HL7V2


def test_revoked_partition_is_not_committed_by_its_old_owner(make_settings: Factory, bootstrap: str) -> None:
    import threading

    from kafka import KafkaProducer

    settings = make_settings(partitions=2)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for p in (0, 1):
        for n in range(10):
            producer.send(settings.hl7_topic, value=hl7(p * 100 + n), partition=p)
    producer.flush()
    producer.close()

    first = KafkaSource(settings)
    second: KafkaSource | None = None
    try:
        held = poll_until(first, 20)
        assert len(held) == 20
        first.ack([e for e in held if e.id.endswith(tuple(f":0:{o}" for o in range(5)))])
        assert committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 2) == {0: 5, 1: None}

        second = KafkaSource(settings)
        got: list[Envelope] = []
        stop = threading.Event()

        def run_second() -> None:
            while not stop.is_set() and second is not None:
                got.extend(second.poll(50, 0.2))

        thread = threading.Thread(target=run_second)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                first.poll(50, 0.2)  # the first member keeps polling, so it takes part in the rebalance
        finally:
            stop.set()
            thread.join()
        assert got, "the second consumer was assigned a partition"
        moved = {e.position.partition for e in got if isinstance(e.position, KafkaPosition)}
        assert len(moved) == 1
        (lost,) = moved
        start = {0: 5, 1: 0}[lost]
        assert next(e.position.offset for e in got if isinstance(e.position, KafkaPosition)) == start, (
            "the new owner resumes at the committed offset"
        )
        first.ack(held)  # late confirmations of records it no longer owns
        first.poll(10, 0.2)
        committed = committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 2)
        assert committed[lost] == {0: 5, 1: None}[lost], "never commit for a revoked partition"
    finally:
        first.close()
        if second is not None:
            second.close()


def test_dicom_lands_on_the_dicom_topic_and_is_consumed_as_dicom(make_settings: Factory, bootstrap: str) -> None:
    from engine.sources.base import CONTENT_DICOM

    settings = make_settings(consume=("dicom",))
    dataset = b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00"
    landing = KafkaLanding(settings, use_default_key=False)
    try:
        eid = landing.land(
            dataset, content_type=CONTENT_DICOM, source="dicom", headers={"dicom.sop-instance-uid": "1.2.3.4"}
        )
    finally:
        landing.close()
    assert eid == f"{settings.dicom_topic}:0:0"
    source = KafkaSource(settings)
    try:
        (env,) = poll_until(source, 1)
        assert env.payload == dataset and env.content_type == CONTENT_DICOM
        assert env.headers["dicom.sop-instance-uid"] == "1.2.3.4"
        source.ack([env])
    finally:
        source.close()
    assert committed_offsets(bootstrap, settings.group_id, settings.dicom_topic, 1) == {0: 1}
