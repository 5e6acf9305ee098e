"""Records of the message store (:mod:`engine.store`): the statuses, a stored row and a final outcome.

Data only (no I/O), so :mod:`engine.store`, :mod:`engine.store_source` and the worker import them without a cycle;
:mod:`engine.store` re-exports every name here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.sources.base import Envelope

__all__ = [
    "FAILED",
    "FILTERED",
    "MAPPED",
    "PUBLISHED",
    "RECEIVED",
    "STATUSES",
    "UNFINISHED",
    "Outcome",
    "StoredMessage",
    "row_to_message",
]

RECEIVED, MAPPED, PUBLISHED, FAILED = "received", "mapped", "published", "failed"
FILTERED = "filtered"  # not a report (lab ORU, ADT, non-report DICOM): reason + category kept, no dead letter
STATUSES = (RECEIVED, MAPPED, PUBLISHED, FAILED, FILTERED)
UNFINISHED = (RECEIVED, MAPPED)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Final result of one envelope, recorded when the worker acknowledges it."""

    status: str  # PUBLISHED, FAILED or FILTERED
    reason: str | None = None  # one PHI-free line (first dead letter / filter reason), None when published
    error_class: str | None = None  # error class, or the filter category
    outputs: tuple[str, ...] = ()  # bundle ids written


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    source: str
    content_type: str
    headers: dict[str, str]
    payload: bytes
    status: str
    received_at: float
    updated_at: float
    attempts: int
    replays: int
    error_class: str | None
    error_reason: str | None
    outputs: list[str]

    def envelope(self) -> Envelope:
        return Envelope(
            id=self.id,
            payload=self.payload,
            content_type=self.content_type,
            source=self.source,
            received_at=self.received_at,
            position=int(self.id),
            headers=self.headers,
        )


def row_to_message(row: Sequence[Any]) -> StoredMessage:
    """One ``messages`` row, columns in :data:`engine.store._COLUMNS` order."""
    return StoredMessage(
        id=str(row[0]),
        source=row[1],
        content_type=row[2],
        headers=json.loads(row[3]),
        payload=bytes(row[4]),
        status=row[5],
        received_at=row[6],
        updated_at=row[7],
        attempts=row[8],
        replays=row[9],
        error_class=row[10],
        error_reason=row[11],
        outputs=json.loads(row[12]) if row[12] else [],
    )
