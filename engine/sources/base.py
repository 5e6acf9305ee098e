"""The seams between transports and the worker: envelopes, landing, sources.

* A **Landing** durably stores raw bytes *before* a transport acknowledges them (MLLP ``AA``/``CA``,
  DICOM ``0x0000``). ``land`` returns only once the bytes are safe (SQLite WAL commit with
  ``synchronous=FULL``, an fsynced file, or a Kafka produce acknowledged with ``acks=all``); it raises
  :class:`engine.errors.TransientError` when it cannot store, so the transport answers ``AE``/``0xA700``.
* A **Source** hands landed envelopes to the worker and is told, per envelope, when every output for it
  is confirmed (``ack``) so that it can mark it done or commit the contiguous offset watermark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["CONTENT_DICOM", "CONTENT_HL7V2", "Envelope", "Landing", "Source"]

CONTENT_HL7V2 = "x-application/hl7-v2+er7"
CONTENT_DICOM = "application/dicom"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One landed unit of input (one MLLP message, one C-STORE dataset, one inbox file, one Kafka record)."""

    id: str  # stable envelope id: store row id, "topic:partition:offset", inbox file name
    payload: bytes  # the original bytes, unchanged (replays and dead letters use them verbatim)
    content_type: str  # CONTENT_HL7V2 or CONTENT_DICOM (the converter still detects by content)
    source: str  # source name from the config, e.g. "mllp", "dicom", "inbox", "kafka"
    received_at: float  # epoch seconds when it was landed
    position: object = None  # source-specific position (row id, (TopicPartition, offset), path)
    headers: Mapping[str, str] = field(default_factory=dict)  # PHI-free provenance (control id, SOP UID, ...)


@runtime_checkable
class Landing(Protocol):
    """Durable raw store used by ingress transports (persist before acknowledge)."""

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        """Store ``payload`` durably and return its envelope id. Raise TransientError when it cannot."""
        ...


@runtime_checkable
class Source(Protocol):
    """Where the worker reads envelopes from."""

    name: str

    def poll(self, max_records: int, timeout: float) -> Sequence[Envelope]:
        """Return up to ``max_records`` envelopes not yet acknowledged, waiting at most ``timeout`` s."""
        ...

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        """Every output for these envelopes is confirmed (published or dead-lettered): mark done / commit."""
        ...

    def pause(self) -> None:
        """Stop handing out new envelopes (back-pressure); already polled ones stay unacknowledged."""
        ...

    def resume(self) -> None: ...

    def close(self) -> None: ...
