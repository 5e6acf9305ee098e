"""Shape a :class:`~pipelines.common.model.Report` into an EU Imaging R5 document (eu-imaging.md §2, §3).

* With at least one Study Instance UID and report content: a ``BundleReportEuImaging`` (type
  ``document``, Composition first) with Composition, DiagnosticReport, Patient, ImagingStudy,
  ServiceRequest (when an accession is known), findings, PractitionerRole/Practitioner and Organization.
* Without a Study Instance UID, when the only content is an attached document (PDF/CDA), or without an
  issue time of day (no instant for ``Bundle.timestamp``): the minimal-metadata ``collection`` Bundle
  (:mod:`pipelines.output.minimal`). A UID or a time is never invented.

All ids are uuid5 of business identifiers; fullUrls and references are ``urn:uuid:`` and every
reference to a resource is written as the identical string (dgr-1 and the hl7eu-im-dr-* rules compare
reference strings).
"""

from __future__ import annotations

from typing import Any

from pipelines.common import fhir
from pipelines.common import primitives as prim
from pipelines.common.ids import urn, uuid_for
from pipelines.common.model import Report
from pipelines.common.sections import SECTIONS
from pipelines.errors import ModelRequirement
from pipelines.output import profiles
from pipelines.output.parts import (
    Parts,
    build_parts,
    categories,
    composition_status,
    dr_header,
    dr_narrative,
    report_code,
    resolve_extras,
)
from pipelines.output.resources import _observation_status
from pipelines.output.sections import build_sections
from pipelines.output.timezone import MARKED_TYPES, mark_resource

__all__ = ["bundle_id", "shape_document", "wants_minimal"]


def bundle_id(report: Report) -> str:
    """One Bundle per report *version*: a resend of the same version gets the same id (eu-imaging §2.1)."""
    return uuid_for("Bundle", report.identifier.system, report.identifier.value, report.version_key)


def wants_minimal(report: Report) -> bool:
    """The minimal-metadata format: no Study Instance UID, only an attached document, or no time of issue.

    A ``document`` Bundle needs ``timestamp`` (an instant, core bdl-10); a report whose issue times carry no
    time of day (a date-only OBR-22 and MSH-7, an SR dated but not timed) has none, and a midnight would be a
    time the source never sent. Such a report keeps its text, notes, conclusion and findings in the
    minimal-metadata ``collection`` Bundle, where ``timestamp`` is optional; pre-built resources (SR
    measurement groups, selections, dose) have no place there: :func:`shape_document` rejects those."""
    if not report.studies:
        return True
    if not _timestamp(report) and not report.extras:
        return True
    has_content = any(s.text.strip() for s in report.sections) or report.findings or report.extras
    return not has_content and bool(report.presented_forms)


def _timestamp(report: Report) -> str | None:
    """``Bundle.timestamp`` (= ``DiagnosticReport.issued``): the report's issue time as an instant, if it has one."""
    return prim.instant(report.issued, report.timezone) if report.issued else None


def shape_document(report: Report) -> dict[str, Any]:
    parts = build_parts(report, with_studies=True)
    resolve_extras(report, parts)
    results = [url for url, res in parts.observations if res.get("_in_result", True)]
    for _, res in parts.observations:
        res.pop("_in_result", None)
    if not results:
        url, anchor = _anchor(report, parts)
        parts.observations.insert(0, (url, anchor))
        parts.section_entries.setdefault("findings", []).insert(0, url)
        results = [url]
    comp_id = uuid_for("Composition", report.identifier.system, report.identifier.value)
    dr_id = uuid_for("DiagnosticReport", report.identifier.system, report.identifier.value)
    comp_url, dr_url = urn(comp_id), urn(dr_id)
    dr = _diagnostic_report(report, parts, dr_id, comp_url, results)
    comp = _composition(report, parts, comp_id)
    entries: list[tuple[str, dict[str, Any]]] = [(comp_url, comp), (dr_url, dr), (parts.patient_url, parts.patient)]
    entries += parts.studies + parts.orders + parts.observations + parts.others + parts.people + parts.orgs
    bid = bundle_id(report)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": bid,
        "meta": profiles.profile_meta(profiles.BUNDLE),
        "identifier": {"system": "urn:ietf:rfc:3986", "value": urn(bid)},
        "type": "document",
    }
    timestamp = _timestamp(report)
    if not timestamp:
        raise ModelRequirement(
            "a document Bundle needs Bundle.timestamp (an instant, bdl-10): the report has no issue time with a "
            "time of day, and its measurement/selection resources cannot go in the minimal-metadata Bundle"
        )
    bundle["timestamp"] = timestamp
    bundle["entry"] = _unique(entries, report.timezone_assumed)
    return bundle


def _unique(entries: list[tuple[str, dict[str, Any]]], uncertain: bool) -> list[dict[str, Any]]:
    """Bundle entries, the first of each fullUrl; with ``uncertain`` (no source offset, none configured) each
    resource's source dateTimes get the ``uncertainPeriod`` extension on the way (eu-imaging.md §2.5)."""
    seen: set[str] = set()
    out = []
    for url, res in entries:
        if url not in seen:
            seen.add(url)
            if uncertain and res.get("resourceType") in MARKED_TYPES:
                mark_resource(res)
            out.append({"fullUrl": url, "resource": res})
    return out


def _anchor(report: Report, parts: Parts) -> tuple[str, dict[str, Any]]:
    """The IG's ObservationAnchor pattern (eu-imaging §2.4): DiagnosticReportEuImaging needs result 1..*;
    a narrative-only report gets one finding whose value is the findings narrative itself."""
    text = next((t for key, t in parts.texts if key == "findings"), None)  # clean section texts
    if text is None:
        text = "\n\n".join(f"{SECTIONS[key][2]}:\n{t}" for key, t in parts.texts)
        if not text and report.presented_forms:
            text = "No narrative text in the source report; see the attached document."
    oid = uuid_for("Observation", report.identifier.system, report.identifier.value, "anchor")
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "meta": profiles.profile_meta(profiles.FINDING),
    }
    if parts.based_on:
        obs["basedOn"] = parts.based_on
    obs["status"] = _obs_status(report.status)
    obs["code"] = {"coding": [{"system": fhir.LOINC, "code": "59776-5", "display": "Procedure findings Narrative"}]}
    obs["subject"] = {"reference": parts.patient_url}
    effective = prim.date_time(report.effective, report.timezone) if report.effective else None
    if effective:
        obs["effectiveDateTime"] = effective
    if text:
        obs["valueString"] = text
    else:  # a withdrawn report (cancelled, entered in error) publishes no text: say why there is no value
        obs["dataAbsentReason"] = {"coding": [{"system": _DAR, "code": _ABSENT.get(report.status, "unknown")}]}
    return urn(oid), obs


_DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_ABSENT = {"cancelled": "not-performed", "entered-in-error": "error"}


def _obs_status(status: str) -> str:
    return _observation_status(status)


def _diagnostic_report(report: Report, parts: Parts, dr_id: str, comp_url: str, results: list[str]) -> dict[str, Any]:
    dr: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": dr_id,
        "meta": profiles.profile_meta(profiles.DIAGNOSTIC_REPORT),
    }
    ext = _dr_extensions(parts)
    if ext:
        dr["extension"] = ext
    dr_header(report, parts, dr)
    dr["result"] = [{"reference": u} for u in results]
    if parts.study_urls:
        dr["study"] = [{"reference": u} for u in parts.study_urls]
    dr["composition"] = {"reference": comp_url}
    dr_narrative(report, parts, dr)
    return dr


def _dr_extensions(parts: Parts) -> list[dict[str, Any]]:
    out = []
    for name, urls in parts.dr_extensions.items():
        for url in urls:
            out.append({"url": profiles.IM + _DR_EXT[name], "valueReference": {"reference": url}})
    return out


_DR_EXT = {
    "finding": "HL7IDRFinding",
    "impression": "HL7IDRImpression",
    "procedure": "HL7IDRImagingProcedure",
    "comparison": "HL7IDRComparisonStudy",
    "recommendation": "HL7IDRRecommendation",
    "history": "HL7IDRPatientHistory",
    "communication": "HL7IDRCommunication",
}


def _composition_date(report: Report) -> str | None:
    for value in (report.date, report.effective, report.issued):
        if value:
            valid = prim.date_time(value, report.timezone)
            if valid:
                return valid
    return None


def _composition(report: Report, parts: Parts, comp_id: str) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "resourceType": "Composition",
        "id": comp_id,
        "meta": profiles.profile_meta(profiles.COMPOSITION),
    }
    if parts.based_on:
        comp["extension"] = [
            {"url": "http://hl7.org/fhir/StructureDefinition/event-basedOn", "valueReference": ref}
            for ref in parts.based_on
        ]
    comp["identifier"] = [fhir.identifier(report.identifier)]
    comp["status"] = composition_status(report.status)
    comp["type"] = report_code(report)
    comp["category"] = categories(report)
    comp["subject"] = [{"reference": parts.patient_url}]
    comp["date"] = _composition_date(report)
    authors = [{"reference": u} for u in parts.author_urls]
    if parts.org_url:
        authors.append({"reference": parts.org_url})
    if not authors:  # authoringDevice slice: e.g. an RDSR written by the modality names no person or org
        authors = [{"reference": u} for u, r in parts.others if r.get("resourceType") == "Device"][:1]
    comp["author"] = authors
    comp["title"] = prim.string(report.title).strip() or "Imaging report"
    attested = prim.date_time(report.attested, report.timezone) if report.attested else None
    if parts.interpreter_urls and attested and report.status in ("final", "corrected", "amended", "appended"):
        comp["attester"] = [
            {
                "mode": {"coding": [{"system": "http://hl7.org/fhir/composition-attestation-mode", "code": "legal"}]},
                "time": attested,
                "party": {"reference": parts.interpreter_urls[0]},
            }
        ]
    if report.relates_to:
        comp["relatesTo"] = [
            {"type": kind, "resourceReference": {"identifier": fhir.identifier(ident)}}
            for kind, ident in report.relates_to
        ]
    comp["section"] = build_sections(report, parts)
    return comp
