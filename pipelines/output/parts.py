"""The resources around a report (patient, people, organisation, orders, studies, findings, extras),
built once and shared by the document and minimal-metadata shapers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.common import fhir
from pipelines.common import primitives as prim
from pipelines.common.ids import urn, uuid_for
from pipelines.common.model import Report
from pipelines.common.sections import SECTIONS, entry_section
from pipelines.output import resources

__all__ = [
    "Parts",
    "build_parts",
    "categories",
    "composition_status",
    "dr_header",
    "dr_narrative",
    "report_code",
    "resolve_extras",
]

Entry = tuple[str, dict[str, Any]]

# HL7 table 0074 codes in the required ValueSet diagnostic-service-sections.
_V2_0074 = frozenset(
    [
        "AU",
        "BG",
        "BLB",
        "CG",
        "CUS",
        "CTH",
        "CT",
        "CH",
        "CP",
        "EC",
        "EN",
        "HM",
        "ICU",
        "IMM",
        "LAB",
        "MB",
        "MCB",
        "MYC",
        "NMS",
        "NMR",
        "NRS",
        "OUS",
        "OT",
        "OTH",
        "PHR",
        "PHY",
        "PT",
        "RAD",
        "RX",
        "RUS",
        "RC",
        "RT",
        "SR",
        "SP",
        "TX",
        "VUS",
        "VR",
        "XRC",
    ]
)


@dataclass(slots=True)
class Parts:
    patient_url: str
    patient: dict[str, Any]
    org_url: str | None = None
    orgs: list[Entry] = field(default_factory=list)
    people: list[Entry] = field(default_factory=list)
    interpreter_urls: list[str] = field(default_factory=list)
    author_urls: list[str] = field(default_factory=list)
    based_on: list[dict[str, Any]] = field(default_factory=list)
    accession_ids: list[dict[str, Any]] = field(default_factory=list)
    orders: list[Entry] = field(default_factory=list)
    order_urls: dict[str, str] = field(default_factory=dict)
    studies: list[Entry] = field(default_factory=list)
    study_urls: list[str] = field(default_factory=list)
    study_by_uid: dict[str, str] = field(default_factory=dict)
    observations: list[Entry] = field(default_factory=list)
    others: list[Entry] = field(default_factory=list)
    section_entries: dict[str, list[str]] = field(default_factory=dict)
    dr_extensions: dict[str, list[str]] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (section key, clean text), report order
    presented_forms: list[dict[str, Any]] = field(default_factory=list)
    displays: dict[str, str] = field(default_factory=dict)  # Observation url -> its value as narrative text


def build_parts(report: Report, *, with_studies: bool) -> Parts:
    patient_url, patient = resources.patient(report)
    parts = Parts(patient_url=patient_url, patient=patient)
    if report.performer is not None:
        parts.org_url, org = resources.organization(report.performer)
        parts.orgs.append((parts.org_url, org))
    seen: set[str] = set()
    for person, target in [(p, "interpreter") for p in report.interpreters] + [(p, "author") for p in report.authors]:
        if not person.has_name():
            continue  # EU core Practitioner needs a name; an id alone cannot be an author or interpreter
        entries = resources.practitioner(person, parts.org_url)
        role_url = entries[0][0]
        (parts.interpreter_urls if target == "interpreter" else parts.author_urls).append(role_url)
        if role_url not in seen:
            seen.add(role_url)
            parts.people.extend(entries)
    if not parts.author_urls:
        parts.author_urls = list(parts.interpreter_urls)
    for order in report.orders:
        if order.accession is None:
            continue
        acsn = fhir.accession_identifier(order.accession)
        parts.accession_ids.append(acsn)
        if with_studies:
            sr = resources.service_request(order, patient_url, acsn, report.timezone, status=_order_status(report))
            url = urn(sr["id"])
            if url not in parts.order_urls.values():
                parts.orders.append((url, sr))
            parts.order_urls[order.accession.value] = url
            parts.based_on.append({"reference": url, "identifier": acsn})
        else:
            parts.based_on.append({"identifier": acsn})
        parts.section_entries.setdefault("order", []).append(parts.order_urls.get(order.accession.value, ""))
    parts.section_entries["order"] = [u for u in parts.section_entries.get("order", []) if u]
    if with_studies:
        first_acsn = parts.accession_ids[0] if parts.accession_ids else None
        for study in report.studies:
            res = resources.imaging_study(study, report, patient_url, first_acsn)
            url = urn(res["id"])
            if url in parts.study_by_uid.values():
                continue
            parts.studies.append((url, res))
            parts.study_urls.append(url)
            parts.study_by_uid[study.uid] = url
        parts.section_entries["imagingstudy"] = list(parts.study_urls)
    obs_based_on = (
        [{"identifier": a} for a in parts.accession_ids[:1]]
        if not with_studies
        else [{"reference": b["reference"], "identifier": b["identifier"]} for b in parts.based_on[:1]]
    )
    for i, finding in enumerate(report.findings):
        res = resources.finding_observation(finding, report, patient_url, obs_based_on, i)
        url = urn(res["id"])
        parts.observations.append((url, res))
        if finding.value_display:
            parts.displays[url] = finding.value_display
        parts.section_entries.setdefault(entry_section(finding.section, res), []).append(url)
    for s in report.sections:
        text = prim.string(s.text)  # cleaned once here; notes, section notes and narrative share it
        if not text.strip():
            continue
        parts.texts.append((s.key, text))
        if s.key in SECTIONS:
            code, display, _ = SECTIONS[s.key]
            parts.notes.append(
                {
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/annotationType",
                            "valueCodeableConcept": {
                                "coding": [{"system": fhir.LOINC, "code": code, "display": display}]
                            },
                        }
                    ],
                    "text": text,
                }
            )
    for att in report.presented_forms:
        form: dict[str, Any] = {"contentType": att.content_type} if att.content_type else {}
        if att.language:
            form["language"] = att.language
        if att.data_b64 or not att.url:
            form["data"] = att.data_b64
        if att.url:
            form["url"] = att.url
        if att.title and prim.string(att.title).strip():
            form["title"] = prim.string(att.title)
        parts.presented_forms.append(form)
    return parts


def resolve_extras(report: Report, parts: Parts) -> None:
    """Place the source-specific resources and resolve their ``@`` placeholder references."""
    if not report.extras:
        return
    dr_url = urn(uuid_for("DiagnosticReport", report.identifier.system, report.identifier.value))
    comp_url = urn(uuid_for("Composition", report.identifier.system, report.identifier.value))
    for extra in report.extras:
        res = _resolve(extra.resource, parts, dr_url, comp_url)
        url = urn(res["id"])
        if res.get("resourceType") == "Observation":
            res["_in_result"] = extra.in_result
            parts.observations.append((url, res))
        else:
            parts.others.append((url, res))
        if extra.section:
            parts.section_entries.setdefault(entry_section(extra.section, res), []).append(url)
        if extra.dr_extension:
            parts.dr_extensions.setdefault(extra.dr_extension, []).append(url)


def _resolve(value: Any, parts: Parts, dr_url: str, comp_url: str) -> Any:
    """Resolve placeholders; every string of a pre-built resource is cleaned on the way (FHIR string rule,
    :func:`pipelines.common.primitives.clean_text`), as the shapers' own builders do."""
    if isinstance(value, str):
        return prim.clean_text(value)
    if isinstance(value, list):
        return [_resolve(v, parts, dr_url, comp_url) for v in value]
    if not isinstance(value, dict):
        return value
    ref = value.get("reference")
    if isinstance(ref, str) and ref.startswith("@"):
        return _placeholder(ref, value, parts, dr_url, comp_url)
    return {k: _resolve(v, parts, dr_url, comp_url) for k, v in value.items()}


def _placeholder(ref: str, value: dict[str, Any], parts: Parts, dr_url: str, comp_url: str) -> dict[str, Any]:
    rest = {k: v for k, v in value.items() if k != "reference"}
    if ref == "@patient":
        return {"reference": parts.patient_url, **rest}
    if ref == "@report":
        return {"reference": dr_url, **rest}
    if ref == "@composition":
        return {"reference": comp_url, **rest}
    if ref.startswith("@study:"):
        uid = ref[len("@study:") :]
        if uid in parts.study_by_uid:
            return {"reference": parts.study_by_uid[uid], **rest}
        return {**rest, "identifier": fhir.study_uid_identifier(uid)}
    if ref.startswith("@order:"):
        acsn_value = ref[len("@order:") :]
        for b in parts.based_on:
            if b["identifier"]["value"] == acsn_value:
                return {**b, **rest}  # an explicit identifier in the placeholder wins
        return rest
    raise ValueError(f"unknown placeholder reference {ref!r}")


def _order_status(report: Report) -> str:
    """ServiceRequest.status: ``revoked`` for a cancelled report (OBR-25 X, table 0123 "order canceled";
    v2-to-FHIR ORC-5 CA -> revoked), else ``completed`` (a report exists for it)."""
    return "revoked" if report.status == "cancelled" else "completed"


def categories(report: Report) -> list[dict[str, Any]]:
    cats: list[dict[str, Any]] = []
    if report.service_section and report.service_section in _V2_0074:
        cats.append({"coding": [{"system": fhir.V2_0074, "code": report.service_section}]})
    cats.append({"coding": [{"system": fhir.LOINC, "code": "85430-7", "display": "Diagnostic imaging report"}]})
    cats.append({"coding": [{"system": fhir.PRIORITY_CATEGORY, "code": "Medical-Imaging"}]})
    return cats


def report_code(report: Report) -> dict[str, Any]:
    if report.code:
        return fhir.codeable(report.code)
    return {"coding": [{"system": fhir.LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]}


_COMPOSITION_STATUS = {"modified": "amended"}


def composition_status(status: str) -> str:
    return _COMPOSITION_STATUS.get(status, status)


def dr_header(report: Report, parts: Parts, dr: dict[str, Any]) -> None:
    """DiagnosticReport elements shared by the full and the minimal-metadata profile, basedOn to
    resultsInterpreter, in FHIR element order."""
    dr["identifier"] = [fhir.identifier(report.identifier)]
    if parts.based_on:
        dr["basedOn"] = parts.based_on
    dr["status"] = report.status
    dr["category"] = categories(report)
    dr["code"] = report_code(report)
    dr["subject"] = {"reference": parts.patient_url}
    effective = prim.date_time(report.effective, report.timezone) if report.effective else None
    end = prim.date_time(report.effective_end, report.timezone) if report.effective_end else None
    if effective and end:  # OBR-7 .. OBR-8 (v2-to-FHIR: effectivePeriod when OBR-8 is valued)
        dr["effectivePeriod"] = {"start": effective, "end": end}
    elif effective:
        dr["effectiveDateTime"] = effective
    issued = prim.instant(report.issued, report.timezone) if report.issued else None
    if issued:
        dr["issued"] = issued
    if parts.org_url:
        dr["performer"] = [{"reference": parts.org_url}]
    if parts.interpreter_urls:
        dr["resultsInterpreter"] = [{"reference": u} for u in parts.interpreter_urls]


def dr_narrative(report: Report, parts: Parts, dr: dict[str, Any]) -> None:
    """note (one per section, typed with the section code), conclusion and presentedForm."""
    if parts.notes:
        dr["note"] = parts.notes
    conclusion = prim.markdown(report.conclusion) if report.conclusion else ""
    if conclusion.strip():
        dr["conclusion"] = conclusion
    # Coded impressions (an IMP row with a code, a CODE under the SR Impressions heading) are the report's coded
    # conclusion too (eu-imaging.md §2.3: impression 19005-8 <-> conclusion / conclusionCode).
    codes = [fhir.codeable(f.value_concept) for f in report.findings if f.section == "impression" and f.value_concept]
    codes = [c for i, c in enumerate(codes) if c.get("coding") and c not in codes[:i]]
    if codes:
        dr["conclusionCode"] = codes
    if parts.presented_forms:
        dr["presentedForm"] = parts.presented_forms
