"""SR document header -> neutral model parts (mappings.md §4.4, §5.1, §5.2).

Patient, Study (with the SR's own series and instance), orders (Accession Number with its Issuer of
Accession Number Sequence, and every Referenced Request Sequence item), verifying and author observers,
institution, equipment and the document dates. Text attributes are decoded by pydicom with the
dataset's Specific Character Set (e.g. ISO_IR 101 Latin-2). Nothing is invented: no accession, UID or
name the file does not carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from pipelines.common.ids import slug, uid_ok
from pipelines.common.model import Concept, Ident, Order, Organization, Patient, Person, Series, Study
from pipelines.context import MappingContext, SenderProfile
from pipelines.dicom_sr.codes import concept
from pipelines.dicom_sr.reader import code_of, first, full_text, get, text

__all__ = [
    "Equipment",
    "Header",
    "dicom_date",
    "dicom_datetime",
    "dt_value",
    "instant",
    "person_from_pn",
    "read_header",
]

_GENDER = {"M": "male", "F": "female", "O": "other"}
_NON_ACQUISITION = {"SR", "KO", "PR", "DOC", "REG", "SEG", "RWV", "PLAN", "FID", "AU"}
_DA = re.compile(r"^(\d{4})(\d{2})?(\d{2})?$")
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


@dataclass(slots=True)
class Equipment:
    manufacturer: str = ""
    model: str = ""
    station: str = ""
    serial: str = ""
    software: str = ""
    device_uid: str = ""

    def name(self) -> str:
        return self.station or " ".join(p for p in (self.manufacturer, self.model) if p)


@dataclass(slots=True)
class Header:
    sop_uid: str
    sop_class: str
    series_uid: str
    study_uid: str
    base: str  # identifier namespace root for this sender
    tz: str
    patient: Patient
    studies: list[Study]
    orders: list[Order]
    interpreters: list[Person]
    authors: list[Person]
    organization: Organization | None
    equipment: Equipment
    verified_at: str | None  # latest Verification DateTime (dateTime)
    content_at: str | None  # Content Date/Time (dateTime)
    created_at: str | None  # Instance Creation Date/Time (dateTime)
    study_at: str | None
    flags: tuple[str, str, str]  # (completion, verification, preliminary)
    predecessors: list[str] = field(default_factory=list)  # SOP Instance UIDs of predecessor documents
    title: Concept | None = None
    evidence: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # SOP uid -> (study, series)
    tz_assumed: bool = False  # no Timezone Offset From UTC and no configured zone: dateTimes are uncertain


Refs = tuple[dict[str, tuple[str, str | None]], list[str]]  # (SOP uid -> (study, series), evidence studies)


def read_header(ds: Dataset, ctx: MappingContext, refs: Refs | None = None) -> Header:
    """``refs``: the evidence sequences when the caller parsed them from the raw bytes (fast path)."""
    institution = text(ds, "InstitutionName")
    profile = ctx.sender("dicom", institution)
    tz = _tz(ds) or ctx.timezone_for(profile)
    tz_assumed = _tz(ds) is None and profile.timezone is None
    base = f"{ctx.system_base}/{slug(institution or text(ds, 'Manufacturer') or 'dicom')}"
    study_uid = text(ds, "StudyInstanceUID")
    study_at = dicom_datetime(text(ds, "StudyDate"), text(ds, "StudyTime"), tz)
    header = Header(
        tz_assumed=tz_assumed,
        sop_uid=text(ds, "SOPInstanceUID"),
        sop_class=text(ds, "SOPClassUID"),
        series_uid=text(ds, "SeriesInstanceUID"),
        study_uid=study_uid,
        base=base,
        tz=tz,
        patient=_patient(ds, ctx, profile, base, tz),
        studies=[],
        orders=_orders(ds, ctx, profile, base, tz),
        interpreters=[],
        authors=[],
        organization=_organization(ds, ctx, profile),
        equipment=Equipment(
            manufacturer=text(ds, "Manufacturer"),
            model=text(ds, "ManufacturerModelName"),
            station=text(ds, "StationName"),
            serial=text(ds, "DeviceSerialNumber"),
            software=text(ds, "SoftwareVersions"),
            device_uid=text(ds, "DeviceUID"),
        ),
        verified_at=None,
        content_at=dicom_datetime(text(ds, "ContentDate"), text(ds, "ContentTime"), tz),
        created_at=dicom_datetime(text(ds, "InstanceCreationDate"), text(ds, "InstanceCreationTime"), tz),
        study_at=study_at,
        flags=(
            text(ds, "CompletionFlag").upper(),
            text(ds, "VerificationFlag").upper(),
            text(ds, "PreliminaryFlag").upper(),
        ),
        title=concept(code_of(first(ds, "ConceptNameCodeSequence")), base),
    )
    if uid_ok(study_uid):
        header.studies.append(_study(ds, header, base))
    for uid in (refs[1] if refs else []) + _evidence_studies(ds):
        if uid != study_uid and uid_ok(uid) and uid not in {s.uid for s in header.studies}:
            header.studies.append(Study(uid=uid))
    _observers(ds, header, base, tz)
    header.evidence = refs[0] if refs else _evidence(ds)
    header.predecessors = [
        text(inst, "ReferencedSOPInstanceUID")
        for study in get(ds, "PredecessorDocumentsSequence") or []
        for series in get(study, "ReferencedSeriesSequence") or []
        for inst in get(series, "ReferencedSOPSequence") or []
        if uid_ok(text(inst, "ReferencedSOPInstanceUID"))
    ]
    return header


def _tz(ds: Dataset) -> str | None:
    raw = text(ds, "TimezoneOffsetFromUTC")
    if re.fullmatch(r"[+-]\d{4}", raw):
        return f"{raw[:3]}:{raw[3:]}"
    return None


def dicom_date(da: str) -> str | None:
    m = _DA.match(da.strip())
    if not m:
        return None
    y, mo, d = m.groups()
    if (mo and not 1 <= int(mo) <= 12) or (d and not 1 <= int(d) <= 31):
        return None
    return "-".join(p for p in (y, mo, d) if p)


def dicom_datetime(da: str, tm: str, tz: str) -> str | None:
    """DA + TM -> FHIR dateTime (a time needs an offset: the file's, else the sender's default)."""
    date = dicom_date(da)
    if date is None:
        return None
    m = _TM.match(tm.strip())
    if not m or len(date) != 10:
        return date
    hh, mm, ss, _ = m.groups()
    if int(hh) > 23 or int(mm or 0) > 59 or int(ss or 0) > 60:
        return date
    return f"{date}T{hh}:{mm or '00'}:{ss or '00'}{tz}"


def dt_value(dt: str, tz: str) -> str | None:
    """DICOM DT -> FHIR dateTime."""
    m = _DT.match(dt.strip())
    if not m:
        return None
    y, mo, d, hh, mi, ss, _, off = m.groups()
    date = dicom_date("".join(p for p in (y, mo, d) if p))
    if date is None:
        return None
    if not hh or len(date) != 10:
        return date
    zone = f"{off[:3]}:{off[3:]}" if off else tz
    return f"{date}T{hh}:{mi or '00'}:{ss or '00'}{zone}"


def instant(value: str | None) -> str | None:
    """A dateTime with seconds and offset is already a valid instant; a bare date is not."""
    return value if value and "T" in value else None


def person_from_pn(raw: str, idents: list[Ident] | None = None) -> Person | None:
    alphabetic = raw.split("=")[0].strip()
    if not alphabetic.strip("^ "):
        return None
    parts = [p.strip() for p in alphabetic.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    return Person(
        identifiers=idents or [],
        family=family or None,
        given=[g for g in (given, middle) if g],
        prefix=[prefix] if prefix else [],
        suffix=[suffix] if suffix else [],
    )


def _patient(ds: Dataset, ctx: MappingContext, profile: SenderProfile, base: str, tz: str) -> Patient:
    pid = text(ds, "PatientID")
    idents = []
    if pid:
        system = profile.patient_id_system or _issuer_system(first(ds, "IssuerOfPatientIDQualifiersSequence"))
        issuer = text(ds, "IssuerOfPatientID")
        if system is None:
            system = f"{ctx.system_base}/{slug(issuer)}/patient-id" if issuer else f"{base}/patient-id"
        idents.append(Ident(system=system, value=pid, type_code="MR"))
    person = person_from_pn(full_text(ds, "PatientName"))
    return Patient(
        identifiers=idents,
        family=person.family if person else None,
        given=person.given if person else [],
        prefix=person.prefix if person else [],
        suffix=person.suffix if person else [],
        birth_date=dicom_date(text(ds, "PatientBirthDate")),
        gender=_GENDER.get(text(ds, "PatientSex").upper()),
        # Patient's Birth Time (0010,0032): with the birth date, the core patient-birthTime extension
        birth_time=_birth_time(text(ds, "PatientBirthDate"), text(ds, "PatientBirthTime"), tz),
    )


def _birth_time(da: str, tm: str, tz: str) -> str | None:
    """Patient's Birth Time (0010,0032) with the birth date, for the core patient-birthTime extension; an
    all-zero time (``000000``, a padded date) claims no birth time."""
    if not tm.strip().strip("0."):
        return None
    return instant(dicom_datetime(da, tm, tz))


def _issuer_system(item: Dataset | None) -> str | None:
    """Universal Entity ID (0040,0032) of an issuer item: ISO OID -> urn:oid:, URI/URL as is."""
    if item is None:
        return None
    uid = text(item, "UniversalEntityID")
    kind = text(item, "UniversalEntityIDType").upper()
    if uid and (kind == "ISO" or uid_ok(uid)):
        return f"urn:oid:{uid}"
    if uid and kind in ("URI", "URL", "") and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", uid):
        return uid
    return None


def _accession_system(issuer: Dataset | None, ctx: MappingContext, profile: SenderProfile, base: str) -> str:
    if profile.accession_system:
        return profile.accession_system
    system = _issuer_system(issuer)
    if system:
        return system
    local = text(issuer, "LocalNamespaceEntityID") if issuer is not None else ""
    return f"{ctx.system_base}/{slug(local)}/accession" if local else f"{base}/accession"


def _orders(ds: Dataset, ctx: MappingContext, profile: SenderProfile, base: str, tz: str) -> list[Order]:
    orders: list[Order] = []
    code = concept(code_of(first(ds, "ProcedureCodeSequence")), base)
    requester = person_from_pn(full_text(ds, "RequestingPhysician") or full_text(ds, "ReferringPhysicianName"))
    reason = text(ds, "ReasonForStudy")
    acsn = text(ds, "AccessionNumber")
    if acsn:
        system = _accession_system(first(ds, "IssuerOfAccessionNumberSequence"), ctx, profile, base)
        orders.append(
            Order(
                accession=Ident(system=system, value=acsn, type_code="ACSN"),
                code=code,
                reason=Concept(text=reason) if reason else None,
                requester=requester,
            )
        )
    for item in get(ds, "ReferencedRequestSequence") or []:
        value = text(item, "AccessionNumber")
        if not value or any(o.accession and o.accession.value == value for o in orders):
            continue
        system = _accession_system(first(item, "IssuerOfAccessionNumberSequence"), ctx, profile, base)
        req_code = concept(code_of(first(item, "RequestedProcedureCodeSequence")), base)
        desc = text(item, "RequestedProcedureDescription")
        if req_code is None and desc:
            req_code = Concept(text=desc)
        why = text(item, "ReasonForTheRequestedProcedure")
        orders.append(
            Order(
                accession=Ident(system=system, value=value, type_code="ACSN"),
                code=req_code or code,
                reason=Concept(text=why) if why else None,
                requester=requester,
            )
        )
    return orders


def _organization(ds: Dataset, ctx: MappingContext, profile: SenderProfile) -> Organization | None:
    name = profile.organization_name or text(ds, "InstitutionName")
    if not name:
        return None
    return Organization(name=name, identifiers=[Ident(system=f"{ctx.system_base}/institution", value=name)])


def _study(ds: Dataset, header: Header, base: str) -> Study:
    modalities = get(ds, "ModalitiesInStudy") or []
    if isinstance(modalities, str):
        modalities = [modalities]
    sop = (header.sop_uid, header.sop_class, _int(text(ds, "InstanceNumber")))
    series = Series(
        uid=header.series_uid,
        modality=text(ds, "Modality") or "SR",
        number=_int(text(ds, "SeriesNumber")),
        description=text(ds, "SeriesDescription") or None,
        instances=[sop] if uid_ok(header.sop_uid) and uid_ok(header.sop_class) else [],
    )
    return Study(
        uid=header.study_uid,
        modalities=[m for m in (str(x).strip().upper() for x in modalities) if m and m not in _NON_ACQUISITION],
        started=header.study_at,
        description=text(ds, "StudyDescription") or None,
        procedure=concept(code_of(first(ds, "ProcedureCodeSequence")), base),
        referrer=person_from_pn(full_text(ds, "ReferringPhysicianName")),
        series=[series] if uid_ok(header.series_uid) else [],
    )


def _evidence_studies(ds: Dataset) -> list[str]:
    uids = []
    for key in ("CurrentRequestedProcedureEvidenceSequence", "ReferencedRequestSequence"):
        for item in get(ds, key) or []:
            uid = text(item, "StudyInstanceUID")
            if uid:
                uids.append(uid)
    return uids


def _evidence(ds: Dataset) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for key in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in get(ds, key) or []:
            study_uid = text(study, "StudyInstanceUID")
            for series in get(study, "ReferencedSeriesSequence") or []:
                series_uid = text(series, "SeriesInstanceUID") or None
                for inst in get(series, "ReferencedSOPSequence") or []:
                    out.setdefault(text(inst, "ReferencedSOPInstanceUID"), (study_uid, series_uid))
    return out


def _observers(ds: Dataset, header: Header, base: str, tz: str) -> None:
    latest = ""
    for item in get(ds, "VerifyingObserverSequence") or []:
        idents = _person_idents(first(item, "VerifyingObserverIdentificationCodeSequence"), base)
        person = person_from_pn(full_text(item, "VerifyingObserverName"), idents)
        if person is not None and person.key() not in {p.key() for p in header.interpreters}:
            header.interpreters.append(person)
        when = text(item, "VerificationDateTime")
        if when > latest:
            latest = when
    header.verified_at = dt_value(latest, tz) if latest else None
    for item in get(ds, "AuthorObserverSequence") or []:
        if text(item, "ObserverType").upper() not in ("PSN", ""):
            continue
        idents = _person_idents(first(item, "PersonIdentificationCodeSequence"), base)
        person = person_from_pn(full_text(item, "PersonName"), idents)
        if person is not None:
            header.authors.append(person)


def _person_idents(code: Dataset | None, base: str) -> list[Ident]:
    c = code_of(code)
    if c is None:
        return []
    return [Ident(system=f"{base}/practitioner/{slug(c.scheme or 'local')}", value=c.value)]


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None
