"""KafkaSource: the raw HL7 / DICOM topics as a :class:`engine.sources.base.Source`.

* ``enable_auto_commit=False``. ``ack(envelopes)`` (called by the worker once every output of those envelopes
  is confirmed) marks their offsets done in the :class:`OffsetTracker`; the contiguous-done watermark of each
  owned partition is then committed with explicit offsets ``{tp: OffsetAndMetadata(watermark + 1, "", -1)}``.
  ``commit()`` is never called without offsets (it would commit everything polled, processed or not).
* kafka-python's consumer is not thread-safe, so commits happen only on the thread that polls. An ``ack``
  from another thread only records the confirmation; the commit follows on the next ``poll`` or ``close``.
* Rebalances: :class:`_Listener` runs on kafka-python's IO thread and only marks partitions revoked / assigned
  in the tracker (no blocking call there: 3.x raises on ``net.run()`` from the IO thread). Records of a
  revoked partition are neither handed out nor committed; their new owner resumes at the committed offset.
* A commit that fails (rebalance in progress, timeout, broker away) is logged and retried at the next
  opportunity; at-least-once tolerates a commit that did or did not happen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from engine.errors import TransientError
from engine.kafka.offsets import OffsetTracker
from engine.kafka.settings import KafkaSettings
from engine.sources.base import Envelope

__all__ = ["KafkaPosition", "KafkaSource"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KafkaPosition:
    """``Envelope.position`` of a Kafka record."""

    topic: str
    partition: int
    offset: int
    epoch: int  # assignment epoch of the partition when the record was delivered
    key: bytes | None = None  # the record key (kept for the dead letters: same key as the source)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, tracker: OffsetTracker[TopicPartition]) -> None:
        self._tracker = tracker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._tracker.revoke(revoked)
        if revoked:
            log.info("kafka partitions revoked: %s", _fmt(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._tracker.assign(assigned)
        if assigned:
            log.info("kafka partitions assigned: %s", _fmt(assigned))

    def on_partitions_lost(self, lost: Any) -> None:
        self._tracker.revoke(lost)
        if lost:
            log.warning("kafka partitions lost (evicted from the group): %s", _fmt(lost))


def _fmt(tps: Any) -> str:
    return ",".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps))


def _headers(record: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in record.headers or ():
        if isinstance(value, bytes | bytearray):
            out[name] = bytes(value).decode("utf-8", "replace")
        elif value is not None:
            out[name] = str(value)
    return out


class KafkaSource:
    """Consumes the configured raw topics in a consumer group; see the module docstring."""

    def __init__(self, settings: KafkaSettings, name: str = "kafka", consumer: KafkaConsumer | None = None) -> None:
        self.name = name
        self.settings = settings
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        if consumer is None:
            try:
                consumer = KafkaConsumer(**settings.consumer_config())
            except KafkaError as exc:  # NoBrokersAvailable, bootstrap timeout: the broker may come back
                raise TransientError(
                    f"kafka consumer: cannot reach {','.join(settings.bootstrap_servers)} ({type(exc).__name__})"
                ) from exc
        self._consumer = consumer
        self._consumer.subscribe(topics=list(settings.source_topics), listener=_Listener(self.tracker))
        self._poll_thread: int | None = None
        self._paused = False
        self._closed = False
        self.commits = 0  # successful commit calls (observability, tests)

    # -- Source protocol ------------------------------------------------------------------------------
    def poll(self, max_records: int, timeout: float) -> Sequence[Envelope]:
        self._poll_thread = threading.get_ident()
        self._commit()
        consumer = self._consumer
        if self._paused:
            assignment = consumer.assignment()
            if assignment:
                consumer.pause(*assignment)  # also covers partitions assigned since pause()
        try:
            batch = consumer.poll(timeout_ms=max(0, int(timeout * 1000)), max_records=max(1, max_records))
        except KafkaError as exc:
            if getattr(exc, "retriable", False):  # broker away, leader moving, ...: the worker backs off
                raise TransientError(f"kafka poll: {type(exc).__name__}") from exc
            raise  # authorization, offsets out of range without reset, ...: stop loudly
        envelopes: list[Envelope] = []
        for tp, records in batch.items():
            for record in records:
                epoch = self.tracker.track(tp, record.offset)
                if epoch is None:  # revoked while we were polling: its new owner reads it
                    continue
                envelopes.append(self._envelope(tp, record, epoch))
        return envelopes

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        for env in envelopes:
            pos = env.position
            if not isinstance(pos, KafkaPosition):
                raise TypeError(f"envelope {env.id} was not delivered by a KafkaSource")
            if not self.tracker.ack(pos.tp, pos.offset, pos.epoch):
                log.info("ack ignored for %s: partition revoked since delivery", env.id)
        if self._poll_thread is None or self._poll_thread == threading.get_ident():
            self._commit()

    def pause(self) -> None:
        self._paused = True
        assignment = self._consumer.assignment()
        if assignment and (self._poll_thread is None or self._poll_thread == threading.get_ident()):
            self._consumer.pause(*assignment)

    def resume(self) -> None:
        self._paused = False
        paused = self._consumer.paused()
        if paused and (self._poll_thread is None or self._poll_thread == threading.get_ident()):
            self._consumer.resume(*paused)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._commit()
        finally:
            self._consumer.close(autocommit=False)

    # -- internals ------------------------------------------------------------------------------------
    def pending(self) -> int:
        return self.tracker.pending()

    def _envelope(self, tp: TopicPartition, record: Any, epoch: int) -> Envelope:
        headers = _headers(record)
        content_type = headers.get("content-type") or self.settings.content_type_for(tp.topic)
        key = record.key if isinstance(record.key, bytes | None) else str(record.key).encode()
        return Envelope(
            id=f"{tp.topic}:{tp.partition}:{record.offset}",
            payload=record.value if record.value is not None else b"",
            content_type=content_type,
            source=self.name,
            received_at=(record.timestamp or 0) / 1000.0,
            position=KafkaPosition(tp.topic, tp.partition, record.offset, epoch, key),
            headers=headers,
        )

    def _commit(self) -> None:
        """Commit the confirmed watermarks (poll thread only)."""
        offsets = self.tracker.commit_offsets()
        if not offsets:
            return
        try:
            self._consumer.commit(
                {tp: OffsetAndMetadata(nxt, "", -1) for tp, nxt in offsets.items()},
                timeout_ms=self.settings.request_timeout_ms,
            )
        except KafkaError as exc:  # CommitFailedError (rebalanced), KafkaTimeoutError (unknown outcome), ...
            log.warning("kafka commit of %d partition(s) failed, retrying later: %s", len(offsets), type(exc).__name__)
            return
        self.tracker.mark_committed(offsets)
        self.commits += 1
