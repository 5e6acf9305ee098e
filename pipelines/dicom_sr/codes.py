"""DICOM coding scheme designators -> FHIR code system URIs (mappings.md §3.7, PS3.16 Section 8)."""

from __future__ import annotations

from pipelines.common import fhir
from pipelines.common.ids import slug
from pipelines.common.model import Coding, Concept
from pipelines.dicom_sr.reader import Code

__all__ = ["SRT", "UMLS", "coding", "concept", "system_for", "ucum"]

SRT = "http://snomed.info/srt"  # legacy SNOMED-RT style codes (T-D3000, G-C0E3): not SNOMED CT ids
UMLS = "http://terminology.hl7.org/CodeSystem/umls"

_SYSTEMS = {
    "DCM": fhir.DCM,
    "SCT": fhir.SCT,
    "SNM3": "http://snomed.info/snm",
    "SRT": SRT,
    "LN": fhir.LOINC,
    "UCUM": fhir.UCUM,
    "UMLS": UMLS,
    "RADLEX": "http://www.radlex.org",
    "NCIt": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "RFC5646": "urn:ietf:bcp:47",
    "RFC3066": "urn:ietf:bcp:47",
    "ISO3166_1": "urn:iso:std:iso:3166",
    "ISO639_1": "urn:ietf:bcp:47",
    "ISO639_2": "http://terminology.hl7.org/CodeSystem/iso639-2",
    "IBSI": "https://ibsi.radiomics.hevs.ch",
    "FMA": "http://purl.org/sig/ont/fma",
    "MDC": "urn:iso:std:iso:11073:10101",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
}

_UPPER = {k.upper(): v for k, v in _SYSTEMS.items()}


def system_for(scheme: str, base: str) -> str:
    """The FHIR system of a coding scheme; private or local schemes get a namespace under ``base``."""
    known = _SYSTEMS.get(scheme) or _UPPER.get(scheme.upper())
    if known:
        return known
    return f"{base}/codesystem/{slug(scheme or 'local')}"


def coding(code: Code, base: str) -> Coding:
    return Coding(code=code.value, system=system_for(code.scheme, base), display=code.meaning or None)


def concept(code: Code | None, base: str) -> Concept | None:
    if code is None:
        return None
    return Concept(codings=(coding(code, base),))


def ucum(unit: Code | None) -> str | None:
    """The UCUM code of a measurement unit: only a unit the sender coded in UCUM (designator ``UCUM``, as sent:
    PS3.16 uses forms such as ``{SUVbw}g/ml``). A unit of any other scheme has none, even when its code value reads
    like UCUM (DCMTK's private ``99_OFFIS_DCMTK`` ``cm`` "Length Unit"): what a private code means is its scheme's
    to say, no published table defines it as the UCUM unit, and its meaning does not say centimetre, so
    ``valueQuantity`` keeps the unit text only (the Code Meaning, else the code value) and claims no UCUM code."""
    if unit is None or unit.scheme != "UCUM":
        return None
    return unit.value
