"""Mapping errors. Every one is permanent for the runtime: the same bytes always fail the same way.

::

    MappingError                 the message cannot be converted; ``reason`` is one line, PHI-free
    ├── ParseError               not well-formed HL7 v2 / DICOM (truncated, binary, empty, oversized)
    └── UnsupportedMessage       well-formed but not a radiology report (lab ORU, order, other type)
        └── RetractedContent     a report whose every content row is withdrawn (HL7 OBX-11 W/D)

``UnsupportedMessage`` and its subclasses are "filtered" outcomes (nothing to convert, with the reason), the
other ``MappingError`` classes are rejections (dead letter).
"""

from __future__ import annotations

__all__ = ["MappingError", "ParseError", "RetractedContent", "UnsupportedMessage"]


class MappingError(Exception):
    """Base class: ``str(exc)`` is a one-line reason that never contains report text or demographics."""


class ParseError(MappingError):
    """The bytes are not a well-formed message of the expected kind."""


class UnsupportedMessage(MappingError):
    """A well-formed message that is not an imaging report."""


class RetractedContent(UnsupportedMessage):
    """Every report content row of the message is withdrawn (HL7 v2 OBX-11 ``W`` posted to the wrong patient,
    or ``D`` deleted; table 0085): nothing is published, the retracted text included. A filtered outcome
    whose reason is :data:`RetractedContent.REASON`."""

    REASON = "all report content retracted (OBX-11 W/D)"

    def __init__(self, reason: str = REASON) -> None:
        super().__init__(reason)
