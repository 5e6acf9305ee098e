"""DICOM SR (and encapsulated PDF/CDA) -> neutral :class:`~pipelines.common.model.Report` objects.

``map_dicom(data, ctx)`` is pure: it reads the given bytes with pydicom (no other I/O, no clock) and
returns one Report per file, or raises :class:`~pipelines.errors.MappingError` with a one-line reason.
What a file is decides its mapping, detected from the content (SOP Class, document title, content
tree), not from the declared template identifier alone:

* Encapsulated PDF / CDA -> a report whose content is the attached document (:mod:`.encapsulated`).
* Radiation dose content (RDSR TID 10001/10011/10021, or dose containers in an Enhanced/Comprehensive
  SR) -> ObservationRadiationDoseEuImaging (:mod:`.dose`), in its own document Bundle.
* TID 1500 Imaging Measurement Report -> measurement groups (:mod:`.tid1500`).
* Any other SR with narrative content -> TID 2000 sections (:mod:`.tid2000`).
* Images, presentation states, Key Object Selections, retired trial SR classes, empty or
  non-report SRs -> :class:`~pipelines.errors.UnsupportedMessage`; unreadable or truncated bytes ->
  :class:`~pipelines.errors.ParseError`.
"""

from __future__ import annotations

from pipelines.common.model import Report
from pipelines.context import MappingContext
from pipelines.errors import ParseError

__all__ = ["map_dicom"]


def map_dicom(data: bytes, ctx: MappingContext) -> list[Report]:
    from pipelines.dicom_sr.mapper import map_parsed, parse

    if len(data) > ctx.max_message_bytes:
        raise ParseError(f"DICOM file of {len(data)} bytes exceeds the {ctx.max_message_bytes}-byte limit")
    return [map_parsed(parse(data, ctx))]
