"""One parsed dataset -> one Report: header, then the content mappers the tree calls for."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pipelines.common import fhir
from pipelines.common.model import Coding, Concept, ExtraResource, Report
from pipelines.context import MappingContext
from pipelines.dicom_sr import dose, encapsulated, tid1500
from pipelines.dicom_sr.build import base_report, device
from pipelines.dicom_sr.charset import UndecodableText, charset_of
from pipelines.dicom_sr.header import Header, read_header
from pipelines.dicom_sr.part10 import read_part10
from pipelines.dicom_sr.rawtree import (
    Elements,
    RawDataError,
    TextDecoder,
    cut_json,
    evidence,
    items_to_tree,
    json_decoder,
    split_content,
    study_uids,
    walk_raw,
)
from pipelines.dicom_sr.reader import Item, dataset_from_json, read_dataset, walk
from pipelines.dicom_sr.sop import classify
from pipelines.dicom_sr.tid2000 import apply_narrative, observer_authors
from pipelines.errors import MappingError, ParseError, UnsupportedMessage

__all__ = ["Parsed", "content_tree", "map_parsed", "parse"]

#: Document titles of SR objects that are viewer or application state, not reports.
_NOT_REPORT_TITLES = {("1", "99_OSIRIX"): "OsiriX annotation store (viewer state serialised as text)"}
_CONTENT_SEQUENCE = Tag(0x0040, 0xA730)
_CONTENT_TAG, _CURRENT_EVIDENCE, _OTHER_EVIDENCE = 0x0040A730, 0x0040A375, 0x0040A385
_DIAGNOSTIC_IMAGING = Coding(code="18748-4", system=fhir.LOINC, display="Diagnostic imaging study")


@dataclass(slots=True)
class Parsed:
    """Everything the mapping reads from the dataset, extracted in one guarded pass."""

    kind: str  # "sr" | "pdf" | "cda"
    header: Header
    root: list[Item]
    root_value: str
    document: encapsulated.Document | None = None


def parse(data: bytes, ctx: MappingContext) -> Parsed:
    """Read every value the mapping needs. pydicom converts values lazily, so a malformed element can
    surface anywhere in this pass: any failure here is a property of the input (ParseError); the
    mapping that follows works on typed values only, and an exception there is a bug."""
    try:
        split: tuple[bytes, dict[int, list[Elements]]] | None
        decode: TextDecoder
        if data[:64].lstrip()[:1] == b"{":
            doc, json_cut = _split_json(data)
            split = (b"", json_cut)
            ds = dataset_from_json(doc)
            decode = json_decoder()
        else:
            fast = read_part10(data)  # a plain Part 10 file, read without dcmread
            if fast is not None:
                ds, split = fast[0], (b"", fast[1])
            else:
                split = split_content(data)
                ds = read_dataset(split[0] if split else data)
            decode = _decoder(ds)
        kind = classify(ds)
        cut = split[1] if split else {}
        refs = None
        if split:
            evidence_items = cut.get(_CURRENT_EVIDENCE, []) + cut.get(_OTHER_EVIDENCE, [])
            refs = (evidence(evidence_items, decode), study_uids(cut.get(_CURRENT_EVIDENCE, []), decode))
        h = read_header(ds, ctx, refs)
        if kind in ("pdf", "cda"):
            return Parsed(kind, h, [], "", encapsulated.read_document(ds, kind))
        root = items_to_tree(cut.get(_CONTENT_TAG, []), decode) if split else content_tree(ds)
        return Parsed(kind, h, root, _root_value(ds))
    except MappingError:
        raise
    except UndecodableText as exc:  # a header attribute (content items name themselves)
        raise ParseError(f"SR header: {exc}") from None
    except (RawDataError, struct.error) as exc:
        raise ParseError(f"truncated or corrupt DICOM file: {exc}") from None
    except Exception as exc:  # untrusted bytes: every parse failure is a rejection
        raise ParseError(f"malformed DICOM data ({type(exc).__name__})") from None


def _split_json(data: bytes) -> tuple[dict[str, object], dict[int, list[Elements]]]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise ParseError("not a readable DICOM JSON dataset (invalid JSON)") from None
    if not isinstance(doc, dict):
        raise ParseError("not a readable DICOM JSON dataset (not an object)")
    return doc, cut_json(doc)


def content_tree(ds: Dataset, *, fast: bool = True) -> list[Item]:
    """The content tree: from the raw Content Sequence bytes when pydicom left them unparsed (Little
    Endian), else through pydicom (deflated or big-endian files)."""
    raw = ds._dict.get(_CONTENT_SEQUENCE)
    implicit, little = ds.original_encoding
    if fast and isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) and little:
        try:  # sent as UN: Implicit VR Little Endian items whatever the transfer syntax (PS3.5 6.2.2)
            return walk_raw(raw.value, bool(implicit) or raw.VR == "UN", _decoder(ds))
        except (RawDataError, struct.error) as exc:
            raise ParseError(f"malformed SR content tree ({exc.__class__.__name__})") from None
    return walk(ds)


def _decoder(ds: Dataset) -> TextDecoder:
    """Strict decoder of the dataset's Specific Character Set (items may switch to their own)."""
    return TextDecoder(charset_of(ds.get("SpecificCharacterSet")))


def map_parsed(p: Parsed) -> Report:
    h = p.header
    if p.document is not None:
        return encapsulated.map_encapsulated(p.document, h)
    root_name = h.title.codings[0] if h.title and h.title.codings else None
    if root_name is not None:
        for (code, scheme), why in _NOT_REPORT_TITLES.items():
            if root_name.code == code and (root_name.system or "").lower().endswith(scheme.lower()):
                raise UnsupportedMessage(f"{why}, not a report")
    if (p.root_value or "CONTAINER") != "CONTAINER":
        raise UnsupportedMessage("SR document root is not a CONTAINER: not a report")
    root = p.root
    if not root:
        raise UnsupportedMessage("no report content: the SR content tree is empty")
    report = base_report(h, _title(h))
    report.code = _report_code(h)
    observer_authors(root, report)
    has_dose = dose.apply_dose(root, h, report)
    has_measurements = tid1500.apply_measurements(root, h, report)
    has_narrative = False if has_dose and dose.is_dose_document(h, root) else apply_narrative(root, h, report)
    if not (has_dose or has_measurements or has_narrative):
        raise UnsupportedMessage("no report content: no text, coded, numeric, image or dose item in the SR tree")
    has_device = any(x.resource.get("resourceType") == "Device" for x in report.extras)
    if has_measurements or not (has_device or report.authors or report.interpreters or report.performer):
        _add_device(h, report, general_equipment=has_measurements)
    return report


def _root_value(ds: Dataset) -> str:
    value = ds.get("ValueType")
    return str(value).strip() if value else ""


def _title(h: Header) -> str:
    if h.title and h.title.codings and h.title.codings[0].display:
        return str(h.title.codings[0].display)
    return "Imaging report"


def _report_code(h: Header) -> Concept:
    codings = [_DIAGNOSTIC_IMAGING]
    if h.title and h.title.codings and h.title.codings[0].code != "18748-4":
        codings.append(h.title.codings[0])
    return Concept(codings=tuple(codings))


def _add_device(h: Header, report: Report, *, general_equipment: bool) -> None:
    res = device(h.equipment, general_equipment=general_equipment)
    if any(x.resource.get("id") == res["id"] for x in report.extras):
        return
    report.extras.insert(0, ExtraResource(resource=res))  # first Device = the authoring-device fallback
