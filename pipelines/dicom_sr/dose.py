"""Radiation dose content -> ObservationRadiationDoseEuImaging (eu-imaging.md §3.7).

Templates are detected from the content, not from the declared template identifier: CT accumulated
dose data (113811) or CT acquisitions (113819) mean TID 10011; accumulated projection X-ray dose data
(113702) or irradiation events (113706) mean TID 10001 (projection, fluoroscopy, mammography);
a radiopharmaceutical administration (113502) means TID 10021; a TID 2006 "Radiation Exposure and
Protection Information" (LOINC 73569-6) heading in a narrative SR is copied verbatim. This finds dose
content in X-Ray Radiation Dose SR objects and in Enhanced/Comprehensive SRs alike.

The profile has no coded dose components: ``valueString`` is a readable summary of the scanner
output metrics (CTDIvol, DLP, DAP, Dose (RP), fluoroscopy time, AGD, administered activity), in the
units the device reported, followed by the IG's wording that these are scanner output metrics and not
patient absorbed dose.

Decision (a hub's view): an RDSR is emitted as its **own document Bundle** for its study, not merged
into a narrative report. ``map_dicom`` is pure and sees one file; the RDSR usually arrives before the
report is signed, or without any report at all, and holding either one back until the other shows up
would need state and a timeout in the mapping. The dose document carries the same Study Instance
UID (ImagingStudy + ``derivedFrom[study]``) and accession (``basedOn``) as the report, and the same
partition key (accession, else Study UID), so consumers find it with the IG's report/manifest
searches by study or accession and a downstream joiner sees both in order. Dose content inside a
narrative SR stays in that report's procedure section. Placement in both cases:
``section[procedure].entry[radiation-dose]``, ``DiagnosticReport.extension[procedure]`` and, for core
dgr-1, ``DiagnosticReport.result``.
"""

from __future__ import annotations

from typing import Any

from pipelines.common import fhir
from pipelines.common.ids import urn, uuid_for
from pipelines.common.model import ExtraResource, Report, Section
from pipelines.dicom_sr.build import accession_ref, device, device_url, sr_instance_selection
from pipelines.dicom_sr.header import Equipment, Header, dt_value
from pipelines.dicom_sr.reader import Item
from pipelines.output.profiles import IM

__all__ = ["NOT_PATIENT_DOSE", "apply_dose", "is_dose_document", "summarize"]

NOT_PATIENT_DOSE = "Dose values represent scanner output metrics and not patient absorbed dose."
_DOSE_TITLES = {"113701", "113500", "113700"}
_CT = {"113811", "113819"}
_PROJECTION = {"113702", "113706"}
_RADIOPHARM = {"113502", "113500"}
_TOTALS = (  # (concept code, label)
    ("113722", "DAP total"),
    ("113725", "Dose (RP) total"),
    ("113726", "fluoroscopy DAP total"),
    ("113728", "fluoroscopy Dose (RP) total"),
    ("113730", "fluoroscopy time total"),
    ("113727", "acquisition DAP total"),
    ("113729", "acquisition Dose (RP) total"),
    ("113731", "radiographic frames"),
    ("111637", "accumulated average glandular dose"),
)


def is_dose_document(h: Header, root: list[Item]) -> bool:
    title = h.title.codings[0].code if h.title and h.title.codings else ""
    return title in _DOSE_TITLES


def apply_dose(root: list[Item], h: Header, report: Report) -> bool:
    """Add a radiation-dose Observation when the tree holds dose content; True if it did."""
    summary = summarize(root)
    if summary is None:
        return False
    eq = _device_observer(root) or h.equipment
    dev = device(eq)
    selection = sr_instance_selection(h, report)
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": uuid_for("Observation", h.sop_uid, "radiation-dose"),
        "meta": {"profile": [IM + "ObservationRadiationDoseEuImaging", IM + "ObservationFindingEuImaging"]},
    }
    based_on = accession_ref(report)
    if based_on:
        obs["basedOn"] = [{"reference": based_on[0]["reference"]}]
    obs["status"] = "final" if h.flags[0] == "COMPLETE" else "preliminary"
    obs["code"] = {
        "coding": [
            {
                "system": fhir.LOINC,
                "code": "73569-6",
                "display": "Radiation exposure and protection information [Description] Document Diagnostic imaging",
            },
        ]
    }
    obs["subject"] = {"reference": "@patient"}
    start, end = _period(root, h)
    if start and end and start != end:
        obs["effectivePeriod"] = {"start": start, "end": end}
    elif start or report.effective:
        obs["effectiveDateTime"] = start or report.effective
    if report.issued:
        obs["issued"] = report.issued
    obs["valueString"] = summary
    obs["device"] = {"reference": device_url(eq)}
    obs["derivedFrom"] = [
        {"reference": f"@study:{h.study_uid}"},
        {"reference": urn(selection["id"])},
    ]
    report.extras.append(ExtraResource(resource=dev))
    report.extras.append(ExtraResource(resource=selection))
    report.extras.append(ExtraResource(resource=obs, section="procedure", in_result=True, dr_extension="procedure"))
    report.sections.append(Section(key="procedure", text=f"Radiation dose: {summary}"))
    return True


def summarize(root: list[Item]) -> str | None:
    """The readable dose summary, or None when the tree holds no dose content."""
    names = _all_names(root)
    parts: list[str] = []
    if names & _CT:
        parts.append(_ct(root))
    if names & _PROJECTION:
        parts.append(_projection(root))
    if names & _RADIOPHARM:
        parts.append(_radiopharm(root))
    for item in root:
        if item.vtype == "CONTAINER" and item.is_("73569-6"):
            text = " ".join(c.text.strip() for c in item.children if c.vtype == "TEXT" and c.text)
            if text:
                parts.append(text)
    parts = [p for p in parts if p]
    if not parts:
        return None
    return " ".join(parts) + " " + NOT_PATIENT_DOSE


def _all_names(items: list[Item]) -> set[str]:
    out: set[str] = set()
    stack = list(items)
    while stack:
        item = stack.pop()
        if item.vtype == "CONTAINER" and item.name is not None:
            out.add(item.name.value)
            stack.extend(item.children)
    return out


def _nums(items: list[Item], code: str) -> list[str]:
    return [_q(c) for c in items if c.vtype == "NUM" and c.is_(code) and c.num and c.num.value is not None]


def _q(item: Item) -> str:
    assert item.num is not None and item.num.value is not None
    value = item.num.value
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    unit = item.num.unit.value if item.num.unit is not None else ""
    if unit in ("1", "{events}", "{ratio}") or unit.startswith("{"):
        unit = ""
    return f"{shown} {unit}".strip()


def _containers(items: list[Item], code: str) -> list[Item]:
    out = []
    stack = list(items)
    while stack:
        item = stack.pop(0)
        if item.vtype != "CONTAINER":
            continue
        if item.is_(code):
            out.append(item)
        else:
            stack.extend(item.children)
    return out


def _ct(root: list[Item]) -> str:
    bits = []
    acquisitions = _containers(root, "113819")
    for acc in _containers(root, "113811"):
        bits += [f"DLP total {v}" for v in _nums(acc.children, "113813")]
        bits += [f"effective dose total {v}" for v in _nums(acc.children, "113814")]
    ctdi: list[tuple[float, str]] = []
    for acq in acquisitions:
        for dose in _containers(acq.children, "113829"):
            for c in dose.children:
                if c.vtype == "NUM" and c.is_("113830") and c.num and c.num.value is not None:
                    ctdi.append((float(c.num.value), _q(c)))
    if ctdi:
        bits.append(f"CTDIvol max {max(ctdi)[1]}" if len(ctdi) > 1 else f"CTDIvol {ctdi[0][1]}")
    head = f"CT irradiation, {len(acquisitions)} acquisition{'s' if len(acquisitions) != 1 else ''}"
    return f"{head}: {'; '.join(bits)}." if bits else f"{head}."


def _projection(root: list[Item]) -> str:
    bits = []
    for acc in _containers(root, "113702"):
        for code, label in _TOTALS:
            values = _nums(acc.children, code)
            if values:
                bits.append(f"{label} {', '.join(values)}")
    events = _containers(root, "113706")
    kind = "Projection X-ray"
    if any(c.is_("111637") for acc in _containers(root, "113702") for c in acc.children):
        kind = "Mammography"
    elif any(c.is_("113726") or c.is_("113730") for acc in _containers(root, "113702") for c in acc.children):
        kind = "Fluoroscopy / projection X-ray"
    head = f"{kind} irradiation, {len(events)} event{'s' if len(events) != 1 else ''}"
    return f"{head}: {'; '.join(bits)}." if bits else f"{head}."


def _radiopharm(root: list[Item]) -> str:
    bits = []
    for adm in _containers(root, "113502"):
        agent = next(
            (
                c.code.meaning
                for c in adm.children
                if c.vtype == "CODE" and c.code and (c.is_("349358000") or c.is_("F-61FDB"))
            ),
            None,
        )
        activity = _nums(adm.children, "113507")
        text = f"{agent or 'radiopharmaceutical'}" + (f", administered activity {activity[0]}" if activity else "")
        bits.append(text)
    return f"Radiopharmaceutical administration: {'; '.join(bits)}." if bits else ""


def _device_observer(root: list[Item]) -> Equipment | None:
    values = {}
    for item in root:
        if item.rel == "HAS OBS CONTEXT" and item.name is not None and item.text:
            values[item.name.value] = item.text.strip()
    if not any(k in values for k in ("121013", "121014", "121015", "121016")):
        return None
    return Equipment(
        manufacturer=values.get("121014", ""),
        model=values.get("121015", ""),
        station=values.get("121013", ""),
        serial=values.get("121016", ""),
        device_uid=values.get("121012", ""),
    )


def _period(root: list[Item], h: Header) -> tuple[str | None, str | None]:
    start = end = None
    for item in root:
        if item.vtype == "DATETIME" and item.text:
            if item.is_("113809"):
                start = dt_value(item.text, h.tz)
            elif item.is_("113810"):
                end = dt_value(item.text, h.tz)
    if start is None:
        times = sorted(
            v
            for ev in _containers(root, "113706") + _containers(root, "113819")
            for c in ev.children
            if c.vtype == "DATETIME" and c.is_("111526") and c.text and (v := dt_value(c.text, h.tz))
        )
        if times:
            start, end = times[0], times[-1]
    return start, end
