"""The three outcomes of a message, shared by every entry point (``engine map``, ``engine backfill``, the service).

Every input message ends in exactly one outcome:

* **converted**: one or more :class:`Output` (serialized FHIR Bundles or publish units);
* **filtered**: a :class:`Filtered`: well-formed, but not something this engine converts (a non-ORU message
  type, a laboratory result, a status-only ORU without report content, a non-report DICOM object). Counted by
  reason, never dead-lettered; an MLLP sender gets ``AR`` with the reason;
* **rejected**: a :class:`Rejection`: a report (or what claims to be one) that cannot be converted. Its
  original bytes and a one-line PHI-free reason go to the dead letters.

This module holds data only (no imports from the rest of the engine), so ``engine.convert`` and
``engine._dispatch`` both import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Conversion", "Filtered", "Output", "Rejection"]


@dataclass(frozen=True, slots=True)
class Output:
    bundle_id: str  # deterministic; file name "<bundle_id>.json"
    body: bytes  # serialized JSON (UTF-8), byte-identical for the same input
    report_id: str  # deterministic id of the report (stable across versions of one report)
    partition_key: str | None  # sha256 hex of issuer|accession (fallback Study UID, then patient); no PHI
    kind: str  # "document" | "minimal" | ...: which Bundle profile
    ids: dict[str, str] = field(default_factory=dict)  # PHI-free ids for logs: control_id, sop_uid, ...


@dataclass(frozen=True, slots=True)
class Rejection:
    """Rejected: dead letter with the original bytes and the reason."""

    index: int  # 1-based message number inside the input unit
    reason: str  # one PHI-free line
    raw: bytes  # the original bytes of that message
    error_class: str = "MappingError"


@dataclass(frozen=True, slots=True)
class Filtered:
    """Filtered: not something this engine converts; counted by ``category``, never a dead letter."""

    index: int  # 1-based message number inside the input unit
    reason: str  # one PHI-free line, e.g. "message type ADT^A01 is not ORU^R01 ..."
    raw: bytes  # the original bytes of that message (kept by the store, not dead-lettered)
    category: str = "UnsupportedMessage"  # the pipelines exception class that decided it


@dataclass(slots=True)
class Conversion:
    messages: int = 0
    outputs: list[Output] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    filtered: list[Filtered] = field(default_factory=list)
