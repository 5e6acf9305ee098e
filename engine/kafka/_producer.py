"""Shared producer plumbing for the sink, the landing and the dead letters: one failure classification.

Permanent (the record itself can never be written: too large, invalid topic, not authorized, rejected by
policy) -> :class:`engine.errors.PermanentError`. Everything else a broker or the network can do (timeouts,
no leader, broker down, disconnects) -> :class:`engine.errors.TransientError`. kafka-python's idempotent
producer already retries inside ``delivery_timeout_ms``; a TransientError tells the worker to retry the
envelope later (the broker cannot de-duplicate that re-send, so consumers de-duplicate by key / bundle id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kerr

from engine.errors import PermanentError, TransientError
from engine.kafka.settings import KafkaSettings

__all__ = ["classify", "encode_headers", "make_producer", "send_and_wait"]

_PERMANENT: tuple[type[BaseException], ...] = (
    kerr.MessageSizeTooLargeError,
    kerr.RecordListTooLargeError,
    kerr.InvalidTopicError,
    kerr.TopicAuthorizationFailedError,
    kerr.ClusterAuthorizationFailedError,
    kerr.PolicyViolationError,
    kerr.InvalidRecordError,
    kerr.UnsupportedForMessageFormatError,
    kerr.CorruptRecordError,
)


def make_producer(settings: KafkaSettings) -> KafkaProducer:
    cfg: dict[str, Any] = settings.producer_config()
    cfg["delivery_timeout_ms"] = max(
        int(settings.delivery_timeout_s * 1000), settings.linger_ms + settings.request_timeout_ms
    )
    return KafkaProducer(**cfg)


def classify(exc: BaseException, what: str) -> TransientError | PermanentError:
    """Map a kafka-python (or serialization) failure to the engine's error tree, one PHI-free line."""
    name = type(exc).__name__
    if isinstance(exc, (*_PERMANENT, TypeError, ValueError)):
        return PermanentError(f"{what}: rejected by Kafka ({name})")
    return TransientError(f"{what}: Kafka unavailable or slow ({name})")


def encode_headers(headers: Mapping[str, str | None] | Iterable[tuple[str, str | None]]) -> list[tuple[str, bytes]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v.encode("utf-8")) for k, v in items if v is not None]


def send_and_wait(
    producer: KafkaProducer,
    settings: KafkaSettings,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    what: str,
) -> Any:
    """Produce one record and block until the broker acknowledged it (acks=all); return its RecordMetadata."""
    try:
        future = producer.send(topic, value=value, key=key, headers=headers)
        return future.get(timeout=settings.delivery_timeout_s + settings.request_timeout_ms / 1000)
    except (kerr.KafkaError, TypeError, ValueError) as exc:
        raise classify(exc, what) from exc
