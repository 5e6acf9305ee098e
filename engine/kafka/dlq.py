"""KafkaDeadLetters: permanent failures to ``<raw topic>.dlq`` (or ``settings.dlq_topic``).

The record value is the failed message's original bytes, unchanged, so a replay is verbatim; the key is the
source record's key (same partitioning as the source). Error context travels in headers:
``dlq.original.topic``, ``dlq.original.partition``, ``dlq.original.offset``, ``dlq.error.class``,
``dlq.error.message`` (one line, truncated; the caller's reason is already PHI-free), ``dlq.failed.at``
(ISO 8601 UTC), ``engine.envelope-id``, ``engine.pipeline.version`` and the source record's own
provenance headers. ``put`` returns only after the broker acknowledged the record.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer

from engine.kafka._producer import ProducerHolder, encode_headers, send_and_wait
from engine.kafka.settings import KafkaSettings
from engine.kafka.sink import pipeline_version
from engine.kafka.source import KafkaPosition
from engine.sources.base import Envelope

__all__ = ["MAX_MESSAGE", "KafkaDeadLetters", "one_line"]

MAX_MESSAGE = 300
_DLQ_PREFIXES = ("dlq.",)


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class KafkaDeadLetters:
    """:class:`engine.sinks.base.DeadLetterSink` on Kafka."""

    def __init__(self, settings: KafkaSettings, name: str = "kafka-dlq", producer: KafkaProducer | None = None) -> None:
        self.name = name
        self.settings = settings
        self._holder = ProducerHolder(settings, producer)
        self._version = pipeline_version()

    def topic_for(self, envelope: Envelope) -> str:
        pos = envelope.position
        if isinstance(pos, KafkaPosition):
            return self.settings.dlq_topic_for(pos.topic)
        return self.settings.dlq_topic_for(self.settings.raw_topic_for(envelope.content_type))

    def put(
        self, envelope: Envelope, payload: bytes, reason: str, error_class: str, details: dict[str, Any] | None = None
    ) -> None:
        pos = envelope.position
        items: list[tuple[str, str | None]] = [
            (k, v) for k, v in envelope.headers.items() if not k.startswith(_DLQ_PREFIXES)
        ]
        key: bytes | None = None
        if isinstance(pos, KafkaPosition):
            key = pos.key
            items += [
                ("dlq.original.topic", pos.topic),
                ("dlq.original.partition", str(pos.partition)),
                ("dlq.original.offset", str(pos.offset)),
            ]
        items += [
            ("dlq.error.class", one_line(error_class, 120)),
            ("dlq.error.message", one_line(reason)),
            ("dlq.failed.at", datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")),
            ("engine.envelope-id", envelope.id),
            ("engine.pipeline.version", self._version),
        ]
        if details:  # e.g. the FHIR server's OperationOutcome
            items.append(("dlq.error.details", json.dumps(details, sort_keys=True)[:16000]))
        topic = self.topic_for(envelope)
        send_and_wait(self._holder, topic, payload, key, encode_headers(items), f"kafka dlq {topic}")

    def close(self) -> None:
        self._holder.close()
