"""Mapping errors. Every one is permanent for the runtime: the same bytes always fail the same way.

::

    MappingError                 the message cannot be converted; ``reason`` is one line, PHI-free
    ├── ParseError               not well-formed HL7 v2 / DICOM (truncated, binary, empty, oversized)
    ├── InvalidReport            a report (ORU^R01 / SR document) that lacks what a conversion needs
    │                            (no PID, no OBR, encapsulated document without its data)
    ├── ModelRequirement         a report, but without what the chosen output model needs (IMR: identifiers
    │                            of patient/organisation/interpreter, Study UID, modality, sign-off time)
    └── UnsupportedMessage       well-formed but not a radiology report (lab ORU, order, other type,
        │                        status-only ORU without OBX content, non-report DICOM object)
        ├── RetractedContent     a report whose every content row is withdrawn (HL7 OBX-11 W/D)
        └── StatusOnly           an ORU without report content whose OBR groups carry a status (OBR-25) for
                                 orders/studies; ``updates`` holds them for the harmonized model

The runtime turns :class:`UnsupportedMessage` (and its subclasses) into the *filtered* outcome (counted by
reason, never a dead letter) and every other :class:`MappingError` into a *rejection* (dead letter with
the original bytes): see ``engine/outcomes.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.common.model import StatusUpdate

__all__ = [
    "InvalidReport",
    "MappingError",
    "ModelRequirement",
    "ParseError",
    "RetractedContent",
    "StatusOnly",
    "UnsupportedMessage",
]


class MappingError(Exception):
    """Base class: ``str(exc)`` is a one-line reason that never contains report text or demographics."""


class ParseError(MappingError):
    """The bytes are not a well-formed message of the expected kind."""


class ModelRequirement(MappingError):
    """A report that the chosen output model cannot express (e.g. IMR references an existing Patient by
    identifier: no patient identifier, no IMR report). Permanent: dead letter with the reason."""


class InvalidReport(MappingError):
    """A message that is a report (ORU^R01, SR document) but cannot be converted: rejected, dead-lettered."""


class UnsupportedMessage(MappingError):
    """A well-formed message that is not an imaging report."""


class RetractedContent(UnsupportedMessage):
    """Every report content row of the message is withdrawn (HL7 v2 OBX-11 ``W`` posted to the wrong patient,
    or ``D`` deleted; table 0085): nothing is published, the retracted text included. A filtered outcome
    whose reason is :data:`RetractedContent.REASON`."""

    REASON = "all report content retracted (OBX-11 W/D)"

    def __init__(self, reason: str = REASON) -> None:
        super().__init__(reason)


class StatusOnly(UnsupportedMessage):
    """No report content, but order status notifications (:class:`~pipelines.common.model.StatusUpdate`).

    Every model but ``harmonized`` treats it as the UnsupportedMessage it is (same reason); the harmonized
    model turns ``updates`` into status patches of the ServiceRequest and ImagingStudy.
    """

    def __init__(self, reason: str, updates: list[StatusUpdate]) -> None:
        super().__init__(reason)
        self.updates = updates
