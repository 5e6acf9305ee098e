"""Review probe (passes: not a bug): one record the broker refuses for good (topic max.message.bytes) in a batch
with good records is classified permanent on every re-write, so the worker isolates it instead of backing off
forever (the idempotent producer's fatal state does not turn the neighbours' failures into transient ones)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaAdminClient

from engine.errors import PermanentError, TransientError
from engine.kafka import KafkaSink
from tests.kafka.kafka_helpers import create_topics
from tests.kafka.test_kafka_roundtrip import envelope, output

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_mixed_batch_with_one_refused_record_is_permanent(
    make_settings: Any, admin: KafkaAdminClient, kafka_broker_instance: Any
) -> None:
    if kafka_broker_instance.kind == "tansu":
        pytest.skip("Tansu does not enforce the topic's max.message.bytes")
    settings = make_settings()
    small = f"{settings.output_topic}.small"
    create_topics(admin, {small: 1}, {"max.message.bytes": "2048"})
    sink = KafkaSink(settings, topic=small)
    outcomes = []
    try:
        for _ in range(3):  # what the worker does: write the whole batch again, flush
            sink.write(output(1), envelope(1))
            sink.write(output(2, body=b"x" * 20_000), envelope(2))
            sink.write(output(3), envelope(3))
            try:
                sink.flush()
                outcomes.append("ok")
            except (PermanentError, TransientError) as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
    finally:
        sink.close()
    assert all(o.startswith(PermanentError.__name__) for o in outcomes), outcomes
