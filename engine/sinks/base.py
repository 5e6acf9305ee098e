"""Sink seam: where converted outputs and dead letters go.

``write`` may buffer; ``flush`` returns only when everything written so far is confirmed (file renamed and
fsynced, Kafka acks received, FHIR server answered 2xx). Failures are classified once, here:
:class:`engine.errors.TransientError` (retry, then back-pressure) or :class:`engine.errors.PermanentError`
(the envelope goes to the dead letters). The FHIR REST publisher of a later issue implements the same
protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.convert import Output
from engine.sources.base import Envelope

__all__ = ["DeadLetterSink", "Sink"]


@runtime_checkable
class Sink(Protocol):
    name: str

    def write(self, output: Output, envelope: Envelope) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class DeadLetterSink(Protocol):
    """Permanent failures: the original bytes plus the reason (folder or ``<topic>.dlq``)."""

    name: str

    def put(self, envelope: Envelope, payload: bytes, reason: str, error_class: str) -> None:
        """Store durably before returning, or, for a sink that also has ``flush()`` (e.g.
        ``FolderDeadLetters(deferred=True)``), buffer until ``flush`` (the worker and the backfill call it
        before they acknowledge / commit). ``payload`` is the failed message's original bytes (for a
        multi-message inbox file, only the failed message); ``reason`` is one PHI-free line. The worker passes
        ``details=`` (a JSON-able dict, e.g. a FHIR OperationOutcome) only when a sink's error carries it; the
        folder and Kafka dead letters keep it."""
        ...

    def close(self) -> None: ...
