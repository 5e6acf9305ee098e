"""Rejections at the door: input a listener refuses before it is stored is counted and kept.

A listener (MLLP, DICOM SCP, inbox) that cannot store what it received (an oversized frame, bytes outside
MLLP frames, a broken frame, a refused DICOM association, an undecodable dataset, a file the store cannot
take) calls :meth:`DoorRejects.reject`. That

* counts it in ``engine_ingress_rejected_total{source,reason}`` (``reason`` is a short fixed code such as
  ``too-large``, ``outside-frame``, ``no-start-block``, ``not-hl7``, ``refused-association``);
* stores a dead letter, the same way as rejections after landing: the original bytes (capped at
  ``keep_bytes``; the sidecar headers carry ``door.size`` and ``door.truncated``) with the one-line
  PHI-free reason and error class ``IngressRejected``. The dead letter's content type is the transport's
  (HL7 v2 for MLLP, DICOM for the SCP, so a Kafka dead-letter topic is found); the header
  ``door.content-type`` says what the kept bytes are. A refused DICOM association keeps its A-ASSOCIATE-RQ
  PDU (AE titles, presentation contexts; no PHI), a refused MLLP peer a JSON summary (peer, reason);
* never raises: a dead-letter destination that is down is logged (the rejection is still counted), because
  the sender must still get its answer.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Protocol

from engine.sources.base import Envelope

__all__ = ["ERROR_CLASS", "DeadLetterPut", "DoorRejects"]

log = logging.getLogger("engine.sources.door")

ERROR_CLASS = "IngressRejected"
DEFAULT_KEEP_BYTES = 1024 * 1024


class DeadLetterPut(Protocol):
    """The part of :class:`engine.sinks.base.DeadLetterSink` the door needs."""

    def put(self, envelope: Envelope, payload: bytes, reason: str, error_class: str) -> None: ...


class _Counter(Protocol):
    def labels(self, *labelvalues: str, **labelkwargs: str) -> _Counter: ...

    def inc(self, amount: float = 1) -> None: ...


class _Metrics(Protocol):
    @property
    def ingress_rejected(self) -> _Counter: ...

    @property
    def ingress_outcomes(self) -> _Counter: ...


class DoorRejects:
    """Counts and keeps door rejections; thread-safe (listener threads and the MLLP event loop's pool)."""

    def __init__(
        self,
        dead_letters: DeadLetterPut | None = None,
        metrics: _Metrics | None = None,
        keep_bytes: int = DEFAULT_KEEP_BYTES,
    ) -> None:
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.keep_bytes = keep_bytes
        self.counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._outcome_children: dict[tuple[str, str], _Counter] = {}

    def outcome(self, source: str, outcome: str) -> None:
        """Count what a sender was told (``converted``, ``filtered``, ``rejected``, ``stored``)."""
        if self.metrics is not None:  # the labelled child is cached: prometheus_client's labels() is slow
            child = self._outcome_children.get((source, outcome))
            if child is None:
                child = self.metrics.ingress_outcomes.labels(source=source, outcome=outcome)
                self._outcome_children[(source, outcome)] = child
            child.inc()

    def reject(
        self,
        *,
        source: str,
        reason_code: str,
        reason: str,
        payload: bytes,
        content_type: str,
        size: int | None = None,
        headers: Mapping[str, str] | None = None,
        kept_type: str | None = None,
    ) -> None:
        """Count and dead-letter one door rejection. ``content_type``: the transport's (CONTENT_HL7V2 or
        CONTENT_DICOM); ``kept_type``: what ``payload`` is when it is not that (JSON summary, junk bytes);
        ``size``: the full size when ``payload`` is already a head."""
        full = len(payload) if size is None else size
        kept = payload[: self.keep_bytes]
        with self._lock:
            self.counts[(source, reason_code)] = self.counts.get((source, reason_code), 0) + 1
        if self.metrics is not None:
            self.metrics.ingress_rejected.labels(source=source, reason=reason_code).inc()
        if self.dead_letters is None:
            return
        envelope = Envelope(
            id=f"door-{uuid.uuid4().hex}",
            payload=kept,
            content_type=content_type,
            source=source,
            received_at=time.time(),
            headers={
                **dict(headers or {}),
                "door.reason": reason_code,
                "door.size": str(full),
                "door.truncated": "true" if len(kept) < full else "false",
                "door.content-type": kept_type or content_type,
            },
        )
        try:
            with self._lock:
                self.dead_letters.put(envelope, kept, reason, ERROR_CLASS)
        except Exception as exc:  # the answer to the sender must not depend on the dead letters
            log.error(
                "door rejection not kept: dead letters unavailable",
                extra={"source": source, "reason": reason_code, "error_class": type(exc).__name__},
            )
