"""Small builders for FHIR R5 JSON structures and the code systems the EU Imaging IG uses."""

from __future__ import annotations

import html
from typing import Any

from pipelines.common.model import Coding, Concept, Ident

__all__ = [
    "ACSN_TYPE",
    "DCM",
    "LOINC",
    "SCT",
    "V2_0203",
    "accession_identifier",
    "codeable",
    "coding",
    "identifier",
    "narrative",
    "study_uid_identifier",
]

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
PRIORITY_CATEGORY = "http://hl7.eu/fhir/eu-health-data-api/CodeSystem/eehrxf-document-priority-category-cs"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

ACSN_TYPE: dict[str, Any] = {
    "coding": [
        {"system": V2_0203, "code": "ACSN"},
        {"system": DCM, "code": "121022", "display": "Accession Number"},
    ]
}


def coding(c: Coding) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.system:
        out["system"] = c.system
    out["code"] = c.code
    if c.display:
        out["display"] = c.display
    return out


def codeable(concept: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if concept.codings:
        out["coding"] = [coding(c) for c in concept.codings]
    if concept.text:
        out["text"] = concept.text
    return out


def identifier(ident: Ident) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ident.type_code:
        out["type"] = {"coding": [{"system": V2_0203, "code": ident.type_code}]}
    out["system"] = ident.system
    out["value"] = ident.value
    if ident.assigner:
        out["assigner"] = {"display": ident.assigner}
    return out


def accession_identifier(ident: Ident) -> dict[str, Any]:
    """IM:AccessionNumberIdentifierEuImaging: system, value, type v2-0203#ACSN (+ DCM 121022)."""
    return {"type": ACSN_TYPE, "system": ident.system, "value": ident.value}


def study_uid_identifier(uid: str) -> dict[str, Any]:
    """IM:StudyInstanceUidIdentifierEuImaging: urn:dicom:uid + urn:oid:<uid> (mappings.md §5.1)."""
    return {
        "type": {"coding": [{"system": DCM, "code": "110180", "display": "Study Instance UID"}]},
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{uid}",
    }


def narrative(text: str, *, heading: str | None = None) -> dict[str, Any]:
    """A generated xhtml narrative; line breaks kept as <br/>."""
    body = "<br/>".join(html.escape(line, quote=False) for line in text.split("\n"))
    if heading:
        body = f"<p><b>{html.escape(heading, quote=False)}</b></p><p>{body}</p>"
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}
