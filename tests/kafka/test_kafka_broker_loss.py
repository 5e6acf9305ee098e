"""A broker that goes away: producing sinks and the landing report TransientError (retry, then back-pressure),
never PermanentError (which would dead-letter a good message), and nothing hangs. Uses a broker of its own."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaAdminClient

from engine.convert import Output
from engine.errors import TransientError
from engine.kafka import KafkaLanding, KafkaSettings, KafkaSink
from engine.sources.base import CONTENT_HL7V2, Envelope
from tests import kafka_broker
from tests.kafka.kafka_helpers import create_topics

pytestmark = pytest.mark.integration


def test_sink_and_landing_turn_a_lost_broker_into_transient_errors(kafka_broker_instance: Any) -> None:
    if kafka_broker_instance.kind == "external":
        pytest.skip("needs a broker this test may stop (KAFKA_BOOTSTRAP is set)")
    broker = kafka_broker.start_tansu() if kafka_broker_instance.kind == "tansu" else kafka_broker.start_kafka()
    try:
        settings = KafkaSettings(
            bootstrap_servers=(broker.bootstrap,), output_topic="lost.fhir", hl7_topic="lost.raw.hl7",
            delivery_timeout_s=2.0, request_timeout_ms=1500, max_block_ms=1500, bootstrap_timeout_ms=1500,
        )
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            create_topics(admin, {"lost.fhir": 1, "lost.raw.hl7": 1})
        finally:
            admin.close()
        out = Output("b1", b'{"resourceType":"Bundle"}', "r1", "ab" * 32, "document", {})
        env = Envelope(id="raw:0:0", payload=b"MSH|", content_type=CONTENT_HL7V2, source="mllp", received_at=0.0)
        sink = KafkaSink(settings)
        landing = KafkaLanding(settings, use_default_key=False)
        try:
            sink.write(out, env)
            sink.flush()
            assert landing.land(b"MSH|1", content_type=CONTENT_HL7V2, source="mllp", headers={}).startswith(
                "lost.raw.hl7:0:"
            )
            broker.stop()  # the broker goes away

            try:
                sink.write(out, env)  # queued, or refused at once: both must be transient
                sink.flush()
            except TransientError:
                pass
            else:
                pytest.fail("flush succeeded without a broker")
            with pytest.raises(TransientError):  # returns (bounded by delivery_timeout_s); a hang hits pytest-timeout
                landing.land(b"MSH|2", content_type=CONTENT_HL7V2, source="mllp", headers={})
        finally:
            sink.close()
            landing.close()
    finally:
        broker.stop()
