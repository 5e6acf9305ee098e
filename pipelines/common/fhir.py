"""Small builders for FHIR R5 JSON structures and the code systems the EU Imaging IG uses."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pipelines.common import primitives as prim
from pipelines.common.model import Coding, Concept, Ident
from pipelines.common.terminology import tho_code

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
    "identifier_type",
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
    """Coding: ``system`` a uri, ``code`` a code, ``display`` a string (primitives enforced here; the checks
    are inlined for the common clean value, this runs for every coding of every Bundle)."""
    out: dict[str, Any] = {}
    system, code, display = c.system, c.code, c.display
    if system:
        out["system"] = system if system.isprintable() and " " not in system else prim.uri(system)
    out["code"] = code if code.isprintable() and " " not in code else prim.code(code)
    if display:
        if not display.isprintable():
            display = prim.string(display)
        if display.strip():
            out["display"] = display
    return out


def codeable(concept: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if concept.codings:
        codings = [coding(c) for c in concept.codings]
        codings = [c for c in codings if c["code"]]
        if codings:
            out["coding"] = codings
    text = concept.text
    if text:
        if not text.isprintable():
            text = prim.string(text)
        if text.strip():
            out["text"] = text
    return out


@lru_cache(maxsize=1024)
def identifier_type(type_code: str) -> dict[str, Any] | None:
    """Identifier.type from an HL7 table 0203 code: a ``v2-0203`` coding only when table 0203 has the code
    (THO 7.0.1; ``mr`` is read as ``MR``); any other code (``MRN``, ``EE``, local codes) keeps its words in
    ``type.text``, never under the table's system. The result is shared: callers never modify it."""
    known = tho_code("v2-0203", type_code)
    if known is not None:
        return {"coding": [{"system": V2_0203, "code": known}]}
    text = prim.string(type_code).strip()
    return {"text": text} if text else None


def identifier(ident: Ident) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ident.type_code:
        kind = identifier_type(ident.type_code)
        if kind is not None:
            out["type"] = kind
    system, value = ident.system, ident.value
    out["system"] = system if system.isprintable() and " " not in system else prim.uri(system)
    out["value"] = value if value.isprintable() else prim.string(value)
    if ident.assigner:
        out["assigner"] = {"display": prim.string(ident.assigner)}
    return out


def accession_identifier(ident: Ident) -> dict[str, Any]:
    """IM:AccessionNumberIdentifierEuImaging: system, value, type v2-0203#ACSN (+ DCM 121022)."""
    return {"type": ACSN_TYPE, "system": prim.uri(ident.system), "value": prim.string(ident.value)}


def study_uid_identifier(uid: str) -> dict[str, Any]:
    """IM:StudyInstanceUidIdentifierEuImaging: urn:dicom:uid + urn:oid:<uid> (mappings.md §5.1)."""
    return {
        "type": {"coding": [{"system": DCM, "code": "110180", "display": "Study Instance UID"}]},
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{uid}",
    }


def narrative(text: str, *, heading: str | None = None) -> dict[str, Any]:
    """A generated xhtml narrative; line breaks kept as <br/>; control characters removed
    (:func:`pipelines.common.primitives.narrative_div`)."""
    return {"status": "generated", "div": prim.narrative_div(text, heading)}
