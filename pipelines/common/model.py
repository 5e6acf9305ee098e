"""The neutral report model both sources map into, and the document shapers read from.

An HL7 v2 ORC/OBR group and a DICOM SR document both become one :class:`Report`. Source mappers fill
what their message says (never more); :mod:`pipelines.output.document` turns a Report into the EU
Imaging R5 resources. Source-specific resources that have no neutral form (TID 1500 measurement
groups, ImagingSelections, radiation-dose Observations) travel as :class:`ExtraResource` entries with
already-built FHIR dicts; inside them the placeholder references ``@patient``, ``@study:<uid>``,
``@order:<accession value>``, ``@report`` and ``@composition`` are resolved by the shaper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Attachment",
    "Coding",
    "Concept",
    "ExtraResource",
    "Finding",
    "Ident",
    "Order",
    "Organization",
    "Patient",
    "Person",
    "Report",
    "Section",
    "Series",
    "StatusUpdate",
    "Study",
]


@dataclass(frozen=True, slots=True)
class Coding:
    code: str
    system: str | None = None
    display: str | None = None


@dataclass(frozen=True, slots=True)
class Concept:
    codings: tuple[Coding, ...] = ()
    text: str | None = None

    def __bool__(self) -> bool:
        return bool(self.codings or self.text)


@dataclass(frozen=True, slots=True)
class Ident:
    system: str
    value: str
    type_code: str | None = None  # HL7 table 0203 code (MR, ACSN, FILL, PLAC, ...)
    assigner: str | None = None


@dataclass(slots=True)
class Patient:
    identifiers: list[Ident] = field(default_factory=list)
    family: str | None = None
    given: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)
    suffix: list[str] = field(default_factory=list)
    name_text: str | None = None
    birth_date: str | None = None  # FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)
    gender: str | None = None  # FHIR administrative gender
    birth_time: str | None = None  # FHIR dateTime of birth, when the source has a time (patient-birthTime)
    name_use: str | None = None  # FHIR name use of the name above (set when there are other names)
    other_names: list[tuple[Person, str | None]] = field(default_factory=list)  # (name, FHIR name use)


@dataclass(slots=True)
class Person:
    """A practitioner (interpreter, author, verifying observer, requester)."""

    identifiers: list[Ident] = field(default_factory=list)
    family: str | None = None
    given: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)
    suffix: list[str] = field(default_factory=list)
    text: str | None = None

    def key(self) -> str:
        if self.identifiers:
            first = self.identifiers[0]
            return f"id|{first.system}|{first.value}"
        return "name|" + "|".join([self.family or "", *self.given, self.text or ""])

    def has_name(self) -> bool:
        return bool(self.family or self.given or self.text)


@dataclass(slots=True)
class Organization:
    name: str
    identifiers: list[Ident] = field(default_factory=list)


@dataclass(slots=True)
class Order:
    accession: Ident | None = None
    placer: Ident | None = None
    filler: Ident | None = None
    code: Concept | None = None
    reason: Concept | None = None
    requester: Person | None = None
    authored: str | None = None  # dateTime


@dataclass(slots=True)
class Series:
    uid: str
    modality: str | None = None
    number: int | None = None
    description: str | None = None
    instances: list[tuple[str, str, int | None]] = field(default_factory=list)  # (sop uid, sop class uid, number)


@dataclass(slots=True)
class Study:
    uid: str
    modalities: list[str] = field(default_factory=list)  # DICOM CID 29 codes
    started: str | None = None
    description: str | None = None
    procedure: Concept | None = None
    referrer: Person | None = None
    series: list[Series] = field(default_factory=list)
    number_of_series: int | None = None
    number_of_instances: int | None = None


@dataclass(slots=True)
class Section:
    """Narrative of one report section. ``key`` is the EU Composition slice (or an extra open section)."""

    key: str  # history | order | procedure | comparison | findings | impression | recommendation |
    #           communication | conclusion | addendum | report
    text: str


@dataclass(slots=True)
class Finding:
    """A coded/numeric/text observation to become an ObservationFindingEuImaging."""

    code: Concept
    section: str = "findings"
    value_concept: Concept | None = None
    # (value, unit text, UCUM code); an int when the source wrote an integer (FHIR decimal precision)
    value_quantity: tuple[float | int, str | None, str | None] | None = None
    value_comparator: str | None = None  # FHIR Quantity.comparator (<, <=, >=, >) of value_quantity
    value_string: str | None = None
    value_date_time: str | None = None  # FHIR dateTime (HL7 DT/DTM/TS results)
    value_time: str | None = None  # FHIR time hh:mm:ss (HL7 TM results without an offset)
    value_display: str | None = None  # the value as narrative shows it (date/time: as sent, no assumed zone)
    status: str | None = None  # Observation.status; None = report status
    interpretation: Concept | None = None
    category: Concept | None = None
    body_site: Concept | None = None
    observation_uid: str | None = None
    key: str = ""  # stable discriminator for the id
    effective: str | None = None  # Observation.effectiveDateTime of its own (OBX-14); None = the report's


@dataclass(frozen=True, slots=True)
class Attachment:
    content_type: str  # "" when the source does not say
    data_b64: str  # "" for a document referenced by ``url`` only
    title: str | None = None
    language: str | None = None
    url: str | None = None  # where the document is (an HL7 RP reference pointer that is a URL)


@dataclass(slots=True)
class ExtraResource:
    """A pre-built FHIR resource (dict) with its placement in the document.

    ``section``: Composition section key to list it in (or None); ``in_result``: also in
    DiagnosticReport.result (required for every Observation listed in a section: dgr-1);
    ``dr_extension``: EU DiagnosticReport extension to reference it from (finding, impression,
    procedure, comparison, ...). ``resource['id']`` must be deterministic and set by the mapper.
    """

    resource: dict[str, Any]
    section: str | None = None
    in_result: bool = False
    dr_extension: str | None = None


@dataclass(slots=True)
class Report:
    """One imaging report version, neutral of its source."""

    source: str  # "hl7v2" | "dicom-sr"
    identifier: Ident  # stable across preliminary / final / corrected versions
    version_key: str  # distinguishes versions of the same report (status, time, content digest)
    status: str  # FHIR DiagnosticReport.status
    patient: Patient
    timezone: str = "+00:00"  # offset used when an instant needs one and the source had none
    timezone_assumed: bool = False  # times had no offset and none is configured: mark dateTimes uncertain
    code: Concept | None = None  # report type (LOINC 18748-4 family) or procedure code as extra coding
    service_section: str | None = None  # HL7 table 0074 code (RAD, CT, ...) when valid
    title: str = "Imaging report"
    orders: list[Order] = field(default_factory=list)
    studies: list[Study] = field(default_factory=list)
    interpreters: list[Person] = field(default_factory=list)  # results interpreter / verifying observer
    authors: list[Person] = field(default_factory=list)
    performer: Organization | None = None
    issued: str | None = None  # instant
    effective: str | None = None  # dateTime
    effective_end: str | None = None  # dateTime: with ``effective``, DiagnosticReport.effectivePeriod (OBR-8)
    date: str | None = None  # Composition.date (dateTime)
    attested: str | None = None  # legal authentication time (dateTime), with interpreters[0]
    sections: list[Section] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    conclusion: str | None = None
    presented_forms: list[Attachment] = field(default_factory=list)
    relates_to: list[tuple[str, Ident]] = field(default_factory=list)  # (replaces|amends|appends, report id)
    extras: list[ExtraResource] = field(default_factory=list)
    device_name: str | None = None
    ids: dict[str, str] = field(default_factory=dict)  # PHI-free log ids (control_id, sop_uid)
    # This version changes the status only (OBX-11 ``U``, table 0085: "status change to final without
    # retransmitting results"; OBR-25 ``X`` cancel): models that update resources in place (harmonized) must
    # patch the status and keep the earlier text. The document model ignores it.
    status_only: bool = False


@dataclass(slots=True)
class StatusUpdate:
    """An ORU^R01 order group without report content (no OBX): an order/study status notification.

    Only the harmonized model converts it (status of its ServiceRequest and ImagingStudy); for every other
    model the message stays filtered as "no report content" (:class:`pipelines.errors.StatusOnly`).
    """

    order_status: str  # OBR-25 as sent, normalised upper-case (HL7 table 0123: O, I, S, A, P, R, F, C, X, ...)
    patient: Patient
    orders: list[Order] = field(default_factory=list)  # only orders with an accession
    studies: list[Study] = field(default_factory=list)
    issued: str | None = None  # instant: OBR-22, else MSH-7
    ids: dict[str, str] = field(default_factory=dict)
