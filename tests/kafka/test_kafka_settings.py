"""KafkaSettings.from_mapping and config/kafka.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.errors import ConfigError
from engine.kafka import KafkaSettings
from engine.sources.base import CONTENT_DICOM, CONTENT_HL7V2

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_derived_names() -> None:
    s = KafkaSettings.from_mapping({"bootstrap_servers": "127.0.0.1:9092, 127.0.0.1:9093"})
    assert s.bootstrap_servers == ("127.0.0.1:9092", "127.0.0.1:9093")
    assert s.source_topics == (s.hl7_topic, s.dicom_topic)
    assert s.dlq_topic_for(s.hl7_topic) == f"{s.hl7_topic}.dlq"
    assert s.raw_topic_for(CONTENT_DICOM) == s.dicom_topic
    assert s.content_type_for(s.hl7_topic) == CONTENT_HL7V2
    consumer = s.consumer_config()
    assert consumer["enable_auto_commit"] is False
    assert consumer["max_poll_records"] <= 100
    producer = s.producer_config()
    assert producer["acks"] == "all" and producer["enable_idempotence"] is True


def test_explicit_dlq_topic_wins() -> None:
    s = KafkaSettings.from_mapping({"dlq_topic": "ops.dlq"})
    assert s.dlq_topic_for("anything") == "ops.dlq"


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"bootstrap_server": "x:1"}, "unknown kafka setting"),
        ({"bootstrap_servers": "localhost"}, "host:port"),
        ({"max_poll_records": 5000}, "max_poll_records"),
        ({"max_poll_records": "20"}, "integer"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"security_protocol": "SASL_SSL"}, "sasl_mechanism"),
        ({"consume": ["hl7", "pdf"]}, "consume"),
        ({"session_timeout_ms": 3000, "heartbeat_interval_ms": 2000}, "heartbeat_interval_ms"),
    ],
)
def test_invalid_settings_are_config_errors(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaSettings.from_mapping(mapping)


def test_sasl_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = KafkaSettings.from_mapping(
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "engine",
         "sasl_password_env": "ENGINE_TEST_KAFKA_PASSWORD"}
    )
    monkeypatch.delenv("ENGINE_TEST_KAFKA_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="ENGINE_TEST_KAFKA_PASSWORD"):
        s.consumer_config()
    monkeypatch.setenv("ENGINE_TEST_KAFKA_PASSWORD", "s3cret")
    assert s.producer_config()["sasl_plain_password"] == "s3cret"


def test_config_kafka_yaml_has_a_valid_kafka_section() -> None:
    doc = yaml.safe_load((ROOT / "config" / "kafka.yaml").read_text())
    s = KafkaSettings.from_mapping(doc["kafka"])
    assert s.output_topic and s.group_id
    assert s.consumer_config()["enable_auto_commit"] is False


def test_config_kafka_yaml_is_a_valid_deployment() -> None:
    from engine.settings import parse_settings

    settings = parse_settings(yaml.safe_load((ROOT / "config" / "kafka.yaml").read_text()), environ={})
    assert isinstance(settings.kafka_source, KafkaSettings)
    assert isinstance(settings.kafka_sink, KafkaSettings)
    assert isinstance(settings.dlq_kafka, KafkaSettings)
    assert settings.kafka_sink.output_topic == "engine.fhir.bundles"


def test_failure_classification_is_decided_once() -> None:
    from kafka import errors as kerr

    from engine.errors import PermanentError, TransientError
    from engine.kafka._producer import classify

    for exc in (kerr.MessageSizeTooLargeError(), kerr.TopicAuthorizationFailedError(), kerr.InvalidTopicError()):
        assert isinstance(classify(exc, "x"), PermanentError), exc
    for exc in (kerr.KafkaTimeoutError(), kerr.NotLeaderForPartitionError(), kerr.KafkaConnectionError()):
        assert isinstance(classify(exc, "x"), TransientError), exc
    assert str(classify(kerr.KafkaTimeoutError("secret detail"), "kafka sink t")) == (
        "kafka sink t: Kafka unavailable or slow (KafkaTimeoutError)"
    ), "one line, the class name only"
