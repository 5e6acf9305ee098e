"""Mapping errors. Every one is permanent for the runtime: the same bytes always fail the same way.

::

    MappingError                 the message cannot be converted; ``reason`` is one line, PHI-free
    ├── ParseError               not well-formed HL7 v2 / DICOM (truncated, binary, empty, oversized)
    └── UnsupportedMessage       well-formed but not a radiology report (lab ORU, order, other type)
"""

from __future__ import annotations

__all__ = ["MappingError", "ParseError", "UnsupportedMessage"]


class MappingError(Exception):
    """Base class: ``str(exc)`` is a one-line reason that never contains report text or demographics."""


class ParseError(MappingError):
    """The bytes are not a well-formed message of the expected kind."""


class UnsupportedMessage(MappingError):
    """A well-formed message that is not an imaging report."""
