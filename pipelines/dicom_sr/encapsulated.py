"""Encapsulated PDF / CDA -> a report whose content is the attached document (``presentedForm``).

The document is the whole presentable content, so the shaper emits the minimal-metadata format
(``BundleReportMinimalMetadataEuImaging`` + DiagnosticReportEuImagingMinimalMetadata) with the
accession and Study Instance UID as logical identifiers (eu-imaging.md §2.2, §3.3, §7). The
Encapsulated Document (0042,0011) is trimmed of its even-length pad byte after the PDF end marker.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from pydicom.dataset import Dataset

from pipelines.common.model import Attachment, Concept, Report
from pipelines.dicom_sr.build import base_report
from pipelines.dicom_sr.header import Header
from pipelines.dicom_sr.reader import text
from pipelines.errors import InvalidReport

__all__ = ["Document", "map_encapsulated", "read_document"]

_MIME = {"pdf": "application/pdf", "cda": "text/xml"}


@dataclass(frozen=True, slots=True)
class Document:
    kind: str  # "pdf" | "cda"
    data: bytes
    mime: str
    title: str


def read_document(ds: Dataset, kind: str) -> Document:
    raw = ds.get("EncapsulatedDocument")
    if not isinstance(raw, (bytes, bytearray)) or not raw:
        raise InvalidReport("encapsulated document object without Encapsulated Document data")
    data = bytes(raw)
    length = ds.get("EncapsulatedDocumentLength")
    if isinstance(length, int) and 0 < length <= len(data):
        data = data[:length]
    elif data.endswith(b"\x00"):  # even-length padding (PDF and XML never end in NUL)
        data = data[:-1]
    if kind == "pdf" and not data.startswith(b"%PDF"):
        raise InvalidReport("Encapsulated PDF object whose document is not a PDF")
    mime = text(ds, "MIMETypeOfEncapsulatedDocument") or _MIME[kind]
    title = text(ds, "DocumentTitle") or ("Imaging report (PDF)" if kind == "pdf" else "Imaging report (CDA)")
    return Document(kind, data, mime, title)


def map_encapsulated(doc: Document, h: Header) -> Report:
    report = base_report(h, doc.title)
    report.status = "final"  # no SR flags: the encapsulated object is the issued document
    report.code = Concept(codings=h.title.codings) if h.title is not None else None
    report.presented_forms.append(
        Attachment(content_type=doc.mime, data_b64=base64.b64encode(doc.data).decode("ascii"), title=doc.title)
    )
    return report
