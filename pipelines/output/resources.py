"""Builders for the participant and context resources of an EU imaging report (pure, deterministic)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pipelines.common import fhir
from pipelines.common import primitives as prim
from pipelines.common.ids import urn, uuid_for
from pipelines.common.model import Finding, Order, Organization, Patient, Person, Report, Study
from pipelines.output import profiles

__all__ = [
    "finding_observation",
    "human_name",
    "imaging_study",
    "organization",
    "patient",
    "practitioner",
    "service_request",
]

_DATA_ABSENT_UNKNOWN = {"extension": [{"url": fhir.DATA_ABSENT, "valueCode": "unknown"}]}

#: :func:`uuid_for` for the shared participants (Organization, Practitioner, PractitionerRole): pure, and a feed
#: names the same organisation and radiologists on every report.
_shared_id = lru_cache(maxsize=4096)(uuid_for)


def _strings(values: list[str]) -> list[str]:
    if all(v.isprintable() and v.strip() for v in values):
        return list(values)
    return [v for v in (prim.string(x) for x in values) if v.strip()]


def human_name(p: Patient | Person, text: str | None = None) -> dict[str, Any]:
    name: dict[str, Any] = {}
    family = prim.string(p.family) if p.family else ""
    if family.strip():
        name["family"] = family
    for key, values in (("given", p.given), ("prefix", p.prefix), ("suffix", p.suffix)):
        parts = _strings(values)
        if parts:
            name[key] = parts
    if text and not name:
        text = prim.string(text)
        if text.strip():
            name["text"] = text
    return name


def patient(report: Report) -> tuple[str, dict[str, Any]]:
    p = report.patient
    pid = patient_id(report)
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid, "meta": profiles.profile_meta(profiles.PATIENT)}
    if p.identifiers:
        res["identifier"] = [fhir.identifier(i) for i in p.identifiers]
    name = human_name(p, p.name_text)
    res["name"] = [name] if name else [_DATA_ABSENT_UNKNOWN]  # eu-pat-1 accepts a data-absent-reason
    if name and p.other_names:  # more names (PID-5 repetitions): each with its use, so they can be told apart
        if p.name_use:
            res["name"] = [{"use": p.name_use, **name}]
        for other, use in p.other_names:
            more = human_name(other, other.text)
            if more:
                res["name"].append({**({"use": use} if use else {}), **more})
    if p.gender:
        res["gender"] = p.gender
    birth = prim.date(p.birth_date) if p.birth_date else None
    if birth:
        res["birthDate"] = birth
        born = prim.date_time(p.birth_time, report.timezone) if p.birth_time else None
        if born and born.startswith(birth) and "T" in born:  # the time of birth (core patient-birthTime)
            res["_birthDate"] = {"extension": [{"url": _BIRTH_TIME, "valueDateTime": born}]}
    else:
        res["_birthDate"] = _DATA_ABSENT_UNKNOWN  # birthDate is 1..1 in patient-eu-core
    return urn(pid), res


_BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"


def patient_id(report: Report) -> str:
    ids = report.patient.identifiers
    if ids:
        return uuid_for("Patient", ids[0].system, ids[0].value)
    return uuid_for("Patient", "report", report.identifier.system, report.identifier.value)


def organization(org: Organization) -> tuple[str, dict[str, Any]]:
    key = f"{org.identifiers[0].system}|{org.identifiers[0].value}" if org.identifiers else org.name
    oid = _shared_id("Organization", key)
    res: dict[str, Any] = {
        "resourceType": "Organization",
        "id": oid,
        "meta": profiles.profile_meta(profiles.ORGANIZATION),
    }
    if org.identifiers:
        res["identifier"] = [fhir.identifier(i) for i in org.identifiers]
    res["name"] = prim.string(org.name)
    return urn(oid), res


def practitioner(person: Person, org_url: str | None) -> list[tuple[str, dict[str, Any]]]:
    """A Practitioner (EU core: name required) and a PractitionerRole tying it to the organisation."""
    key = person.key()
    prid = _shared_id("Practitioner", key)
    prac: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": prid,
        "meta": profiles.profile_meta(profiles.PRACTITIONER),
    }
    if person.identifiers:
        prac["identifier"] = [fhir.identifier(i) for i in person.identifiers]
    prac["name"] = [human_name(person, person.text)]
    role_id = _shared_id("PractitionerRole", key, org_url or "")
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": role_id,
        "meta": profiles.profile_meta(profiles.PRACTITIONER_ROLE),
        "practitioner": {"reference": urn(prid)},
    }
    if org_url:
        role["organization"] = {"reference": org_url}
    return [(urn(role_id), role), (urn(prid), prac)]


def imaging_study(study: Study, report: Report, patient_url: str, accession: dict[str, Any] | None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": uuid_for("ImagingStudy", study.uid),
        "meta": profiles.profile_meta(profiles.IMAGING_STUDY),
        "identifier": [fhir.study_uid_identifier(study.uid)],
        "status": "available",
    }
    if study.modalities:
        res["modality"] = [{"coding": [{"system": fhir.DCM, "code": m}]} for m in study.modalities]
    res["subject"] = {"reference": patient_url}
    started = prim.date_time(study.started, report.timezone) if study.started else None
    if started:
        res["started"] = started
    if accession:
        res["basedOn"] = [{"identifier": accession}]
    if study.referrer is not None and study.referrer.has_name():
        res["referrer"] = {"display": _display(study.referrer)}
    if study.number_of_series is not None:
        res["numberOfSeries"] = study.number_of_series
    if study.number_of_instances is not None:
        res["numberOfInstances"] = study.number_of_instances
    if study.description and prim.string(study.description).strip():
        res["description"] = prim.string(study.description)
    series = [s for s in study.series if s.modality]
    if series:
        res["series"] = []
        for s in series:
            entry: dict[str, Any] = {"uid": s.uid}
            if s.number is not None:
                entry["number"] = s.number
            entry["modality"] = {"coding": [{"system": fhir.DCM, "code": s.modality}]}
            if s.description and prim.string(s.description).strip():
                entry["description"] = prim.string(s.description)
            if s.instances:
                entry["instance"] = [_instance(uid, cls, num) for uid, cls, num in s.instances]
            res["series"].append(entry)
    return res


def _instance(uid: str, sop_class: str, number: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": uid, "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"}}
    if number is not None:
        out["number"] = number
    return out


def _display(person: Person) -> str:
    parts = [*person.prefix, *person.given, person.family or "", *person.suffix]
    return prim.string(" ".join(p for p in parts if p) or person.text or "") or "unnamed"


def service_request(
    order: Order, patient_url: str, accession: dict[str, Any], timezone: str = "+00:00", *, status: str = "completed"
) -> dict[str, Any]:
    assert order.accession is not None
    res: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": uuid_for("ServiceRequest", order.accession.system, order.accession.value),
        "meta": profiles.profile_meta(profiles.SERVICE_REQUEST),
        "identifier": [accession],
        "status": status,
        "intent": "order",
        "category": [{"coding": [{"system": fhir.SCT, "code": "363679005", "display": "Imaging"}]}],
    }
    if order.code:
        res["code"] = {"concept": fhir.codeable(order.code)}
    res["subject"] = {"reference": patient_url}
    authored = prim.date_time(order.authored, timezone) if order.authored else None
    if authored:
        res["authoredOn"] = authored
    if order.requester is not None and order.requester.has_name():
        res["requester"] = {"display": _display(order.requester)}
    if order.reason:
        res["reason"] = [{"concept": fhir.codeable(order.reason)}]
    return res


#: LOINC codes of the FHIR R5 core vital-signs profiles (vitalspanel, resprate, heartrate, oxygensat, bodytemp,
#: bodyheight, headcircum, bodyweight, bmi, bp) and of the blood-pressure components.
VITAL_SIGN_CODES = frozenset({
    "85353-1", "9279-1", "8867-4", "2708-6", "59408-5", "8310-5", "8302-2", "9843-4", "29463-7", "39156-5",
    "85354-9", "8480-6", "8462-4",
})  # fmt: skip
_VITAL_SIGNS_CODING = {
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "vital-signs",
    "display": "Vital Signs",
}


def finding_observation(
    finding: Finding, report: Report, patient_url: str, based_on: list[dict[str, Any]], index: int
) -> dict[str, Any]:
    oid = uuid_for("Observation", report.identifier.system, report.identifier.value, finding.key or str(index))
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "meta": profiles.profile_meta(profiles.FINDING),
    }
    if finding.observation_uid:
        res["identifier"] = [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://hl7.eu/fhir/imaging-r5/CodeSystem/codesystem-missing-dicom-terminology",
                            "code": "00080018",
                        }
                    ]
                },
                "system": "urn:dicom:uid",
                "value": f"urn:oid:{finding.observation_uid}",
            }
        ]
    if based_on:
        res["basedOn"] = based_on
    res["status"] = finding.status or _observation_status(report.status)
    if finding.category:
        res["category"] = [fhir.codeable(finding.category)]
    if any(c.system == fhir.LOINC and c.code in VITAL_SIGN_CODES for c in finding.code.codings):
        # FHIR R5 core: an Observation with a vital-sign LOINC code SHALL conform to the vital-signs profile,
        # whose category slice VSCat (vital-signs) is 1..1 (a patient weight or heart rate in a report).
        res.setdefault("category", []).append({"coding": [dict(_VITAL_SIGNS_CODING)]})
    res["code"] = fhir.codeable(finding.code)
    res["subject"] = {"reference": patient_url}
    when = finding.effective or report.effective
    effective = prim.date_time(when, report.timezone) if when else None
    if effective:
        res["effectiveDateTime"] = effective
    value_string = prim.string(finding.value_string) if finding.value_string is not None else ""
    quantity = prim.decimal(finding.value_quantity[0]) if finding.value_quantity is not None else None
    if finding.value_quantity is not None and quantity is not None:
        _, unit, ucum = finding.value_quantity
        q: dict[str, Any] = {"value": quantity}
        if finding.value_comparator in _COMPARATORS:
            q["comparator"] = finding.value_comparator
        if unit and prim.string(unit).strip():
            q["unit"] = prim.string(unit)
        if ucum:
            q["system"] = fhir.UCUM
            q["code"] = prim.code(ucum)
        res["valueQuantity"] = q
    elif finding.value_concept:
        res["valueCodeableConcept"] = fhir.codeable(finding.value_concept)
    elif finding.value_date_time and prim.date_time(finding.value_date_time, report.timezone):
        res["valueDateTime"] = prim.date_time(finding.value_date_time, report.timezone)
    elif finding.value_time:
        res["valueTime"] = finding.value_time
    elif value_string.strip():
        res["valueString"] = value_string
    if finding.interpretation:
        res["interpretation"] = [fhir.codeable(finding.interpretation)]
    if finding.body_site:
        res["bodySite"] = fhir.codeable(finding.body_site)
    return res


#: FHIR R5 Quantity.comparator (quantity-comparator, required binding); ``ad`` has no HL7 v2 SN spelling.
_COMPARATORS = frozenset({"<", "<=", ">=", ">"})

_OBS_STATUS = {
    "registered": "registered",
    "partial": "preliminary",
    "preliminary": "preliminary",
    "modified": "amended",
    "final": "final",
    "amended": "amended",
    "corrected": "corrected",
    "appended": "final",
    "cancelled": "cancelled",
    "entered-in-error": "entered-in-error",
    "unknown": "unknown",
}


def _observation_status(report_status: str) -> str:
    return _OBS_STATUS.get(report_status, "unknown")
