"""Shared producer plumbing for the sink, the landing and the dead letters: one failure classification.

Permanent (the record itself can never be written: too large, invalid topic, not authorized, rejected by
policy) -> :class:`engine.errors.PermanentError`. Everything else a broker or the network can do (timeouts,
no leader, broker down, disconnects) -> :class:`engine.errors.TransientError`. kafka-python's idempotent
producer already retries inside ``delivery_timeout_ms``; a TransientError tells the worker to retry the
envelope later (the broker cannot de-duplicate that re-send, so consumers de-duplicate by key / bundle id).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kerr

from engine.errors import PermanentError, TransientError
from engine.kafka.settings import KafkaSettings

__all__ = ["ProducerHolder", "classify", "encode_headers", "make_producer", "send_and_wait"]

log = logging.getLogger(__name__)

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
    try:
        return KafkaProducer(**cfg)
    except kerr.KafkaError as exc:  # NoBrokersAvailable, bootstrap timeout: the broker may come back
        raise TransientError(f"kafka producer: cannot reach {','.join(settings.bootstrap_servers)} "
                             f"({type(exc).__name__})") from exc


def classify(exc: BaseException, what: str) -> TransientError | PermanentError:
    """Map a kafka-python (or serialization) failure to the engine's error tree, one PHI-free line."""
    name = type(exc).__name__
    if isinstance(exc, (*_PERMANENT, TypeError, ValueError)):
        return PermanentError(f"{what}: rejected by Kafka ({name})")
    return TransientError(f"{what}: Kafka unavailable or slow ({name})")


def encode_headers(headers: Mapping[str, str | None] | Iterable[tuple[str, str | None]]) -> list[tuple[str, bytes]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v.encode("utf-8")) for k, v in items if v is not None]


def is_poisoned(producer: KafkaProducer) -> bool:
    """kafka-python 3.x moves an idempotent producer to a fatal state on some broker errors (for example a
    record over the topic's ``max.message.bytes``); every later send then fails. Detect it to replace it."""
    manager = getattr(producer, "_transaction_manager", None)
    check = getattr(manager, "has_fatal_error", None)
    return bool(check()) if callable(check) else False


class ProducerHolder:
    """One shared, thread-safe producer; replaced (when owned) after it went into a fatal state."""

    def __init__(self, settings: KafkaSettings, producer: KafkaProducer | None = None) -> None:
        self.settings = settings
        self._owned = producer is None
        self._producer = producer if producer is not None else make_producer(settings)
        self._lock = threading.Lock()
        self.replaced = 0

    @property
    def producer(self) -> KafkaProducer:
        return self._producer

    def recover(self) -> None:
        """Call after a failed send: swap in a fresh producer if this one can no longer send."""
        if not self._owned:
            return
        with self._lock:
            old = self._producer
            if not is_poisoned(old):
                return
            self._producer = make_producer(self.settings)
            self.replaced += 1
        log.warning("kafka producer entered a fatal state; replaced it")
        old.close(timeout=0)

    def close(self) -> None:
        if self._owned:
            self._producer.close(timeout=self.settings.delivery_timeout_s)


def send_and_wait(
    holder: ProducerHolder,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    what: str,
) -> Any:
    """Produce one record and block until the broker acknowledged it (acks=all); return its RecordMetadata."""
    settings = holder.settings
    try:
        future = holder.producer.send(topic, value=value, key=key, headers=headers)
        return future.get(timeout=settings.delivery_timeout_s + settings.request_timeout_ms / 1000)
    except (kerr.KafkaError, TypeError, ValueError) as exc:
        holder.recover()
        raise classify(exc, what) from exc
