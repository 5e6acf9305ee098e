"""One parsed dataset -> one Report: header, then the content mappers the tree calls for."""

from __future__ import annotations

from pydicom.dataset import Dataset

from pipelines.common import fhir
from pipelines.common.model import Coding, Concept, ExtraResource, Report
from pipelines.context import MappingContext
from pipelines.dicom_sr import dose, encapsulated, tid1500
from pipelines.dicom_sr.build import base_report, device
from pipelines.dicom_sr.header import Header, read_header
from pipelines.dicom_sr.reader import walk
from pipelines.dicom_sr.tid2000 import apply_narrative, observer_authors
from pipelines.errors import UnsupportedMessage

__all__ = ["map_dataset"]

#: Document titles of SR objects that are viewer or application state, not reports.
_NOT_REPORT_TITLES = {("1", "99_OSIRIX"): "OsiriX annotation store (viewer state serialised as text)"}
_DIAGNOSTIC_IMAGING = Coding(code="18748-4", system=fhir.LOINC, display="Diagnostic imaging study")


def map_dataset(ds: Dataset, kind: str, ctx: MappingContext) -> Report:
    h = read_header(ds, ctx)
    if kind in ("pdf", "cda"):
        return encapsulated.map_encapsulated(ds, h, kind)
    root_name = h.title.codings[0] if h.title and h.title.codings else None
    if root_name is not None:
        for (code, scheme), why in _NOT_REPORT_TITLES.items():
            if root_name.code == code and (root_name.system or "").lower().endswith(scheme.lower()):
                raise UnsupportedMessage(f"{why}, not a report")
    if (_root_value(ds) or "CONTAINER") != "CONTAINER":
        raise UnsupportedMessage("SR document root is not a CONTAINER: not a report")
    root = walk(ds)
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
    report.extras.append(ExtraResource(resource=res))
