"""KafkaLanding: with Kafka, the raw topic *is* the message store.

``land`` produces the original bytes to the raw topic for their content type (HL7 v2 or DICOM) with the
idempotent producer (``acks=all``) and returns only after the broker acknowledged the record, so the MLLP
listener / DICOM SCP may then answer ``AA`` / ``0x0000``. It raises :class:`engine.errors.TransientError`
when the record is not safely stored (the transport answers ``AE`` / ``0xA700``) and
:class:`engine.errors.PermanentError` when Kafka can never take it (e.g. larger than ``max_request_size``).

Key: the partition key of the report (sha256 hex of the issuer-qualified accession, never PHI), computed by
``engine.convert.partition_key_for(payload)`` when the converter provides it, so that an ORU and the SR of
the same study land on the same partition and are processed in order. Without it (or when the payload has no
accession) the record is produced without a key. The envelope id is ``topic:partition:offset``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from kafka import KafkaProducer

from engine.kafka._producer import ProducerHolder, encode_headers, send_and_wait
from engine.kafka.settings import KafkaSettings

__all__ = ["KafkaLanding", "default_key_function"]

log = logging.getLogger(__name__)

KeyFunction = Callable[[bytes], "str | None"]


def default_key_function() -> KeyFunction | None:
    """``engine.convert.partition_key_for`` when the converter has it, else None (key-less produce)."""
    try:
        from engine import convert
    except ImportError:  # pragma: no cover - engine.convert is part of the package
        return None
    fn = getattr(convert, "partition_key_for", None)
    return fn if callable(fn) else None


class KafkaLanding:
    """:class:`engine.sources.base.Landing` backed by the raw topics."""

    def __init__(
        self,
        settings: KafkaSettings,
        producer: KafkaProducer | None = None,
        key_function: KeyFunction | None = None,
        *,
        use_default_key: bool = True,
    ) -> None:
        self.settings = settings
        self._holder = ProducerHolder(settings, producer)
        self._key_function = key_function or (default_key_function() if use_default_key else None)

    def key_for(self, payload: bytes) -> bytes | None:
        if self._key_function is None:
            return None
        try:
            key = self._key_function(payload)
        except Exception as exc:  # a payload that cannot be keyed is still landed; the worker judges it
            log.debug("no partition key for landed payload: %s", type(exc).__name__)
            return None
        return key.encode("ascii") if key else None

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        topic = self.settings.raw_topic_for(content_type)
        items: dict[str, str | None] = {
            "content-type": content_type,
            "source": source,
            "received.at": f"{time.time():.3f}",
        }
        items.update(headers)
        meta = send_and_wait(
            self._holder, topic, payload, self.key_for(payload), encode_headers(items),
            f"kafka landing {topic}",
        )
        return f"{meta.topic}:{meta.partition}:{meta.offset}"

    def close(self) -> None:
        self._holder.close()
