"""Mapping errors. Every one is permanent for the runtime: the same bytes always fail the same way.

::

    MappingError                 the message cannot be converted; ``reason`` is one line, PHI-free
    ├── ParseError               not well-formed HL7 v2 / DICOM (truncated, binary, empty, oversized)
    ├── InvalidReport            a report (ORU^R01 / SR document) that lacks what a conversion needs
    │                            (no PID, no OBR, encapsulated document without its data)
    └── UnsupportedMessage       well-formed but not a radiology report (lab ORU, order, other type,
                                 status-only ORU without OBX content, non-report DICOM object)

The runtime turns :class:`UnsupportedMessage` (and its subclasses) into the *filtered* outcome (counted by
reason, never a dead letter) and every other :class:`MappingError` into a *rejection* (dead letter with
the original bytes): see ``engine/outcomes.py``.
"""

from __future__ import annotations

__all__ = ["InvalidReport", "MappingError", "ParseError", "UnsupportedMessage"]


class MappingError(Exception):
    """Base class: ``str(exc)`` is a one-line reason that never contains report text or demographics."""


class ParseError(MappingError):
    """The bytes are not a well-formed message of the expected kind."""


class InvalidReport(MappingError):
    """A message that is a report (ORU^R01, SR document) but cannot be converted: rejected, dead-lettered."""


class UnsupportedMessage(MappingError):
    """A well-formed message that is not an imaging report."""
