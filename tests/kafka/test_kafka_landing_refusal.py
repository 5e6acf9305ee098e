"""KafkaLanding against a real broker: a record Kafka can never take is a PermanentError (the transports then
answer AR / a DICOM failure status, never "retry"), nothing of it is stored, and the landing keeps working.
(tests/delivery/test_ingress.py covers what the transports do with that error, with a stand-in landing.)"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from kafka import KafkaAdminClient

from engine.errors import PermanentError
from engine.kafka import KafkaLanding
from engine.sources.base import CONTENT_HL7V2
from tests.kafka.kafka_helpers import create_topics, read_topic

pytestmark = pytest.mark.integration


def _land(landing: KafkaLanding, payload: bytes) -> str:
    return landing.land(payload, content_type=CONTENT_HL7V2, source="mllp", headers={})


def test_record_over_the_topics_max_message_bytes_is_refused_for_good(
    make_settings: Any, admin: KafkaAdminClient, bootstrap: str, kafka_broker_instance: Any
) -> None:
    """The broker refuses it (topic max.message.bytes 2048; the producer's own limit is 1 MiB)."""
    if kafka_broker_instance.kind == "tansu":
        pytest.skip("Tansu does not enforce the topic's max.message.bytes")
    settings = make_settings()
    small = f"{settings.hl7_topic}.small"
    create_topics(admin, {small: 1}, {"max.message.bytes": "2048"})
    settings = dataclasses.replace(settings, hl7_topic=small)
    landing = KafkaLanding(settings, use_default_key=False)
    try:
        with pytest.raises(PermanentError, match=f"kafka landing {small}: rejected by Kafka"):
            _land(landing, b"MSH|^~\\&|" + b"x" * 20_000)
        assert _land(landing, b"MSH|^~\\&|small").startswith(f"{small}:0:")  # still usable afterwards
    finally:
        landing.close()
    assert [r.value for r in read_topic(bootstrap, small, expect=1)] == [b"MSH|^~\\&|small"]


def test_record_over_the_producers_max_request_size_is_refused_for_good(make_settings: Any, bootstrap: str) -> None:
    settings = make_settings(max_request_size=4096)
    landing = KafkaLanding(settings, use_default_key=False)
    try:
        with pytest.raises(PermanentError, match="rejected by Kafka"):
            _land(landing, b"MSH|^~\\&|" + b"x" * 10_000)
        assert _land(landing, b"MSH|^~\\&|small").startswith(f"{settings.hl7_topic}:0:")
    finally:
        landing.close()
    assert [r.value for r in read_topic(bootstrap, settings.hl7_topic, expect=1)] == [b"MSH|^~\\&|small"]
