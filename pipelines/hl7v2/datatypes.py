"""HL7 v2 data types to the neutral model (v2-to-FHIR datatype maps, mappings.md §1.9)."""

from __future__ import annotations

import functools
import re
from datetime import datetime
from functools import lru_cache

from pipelines.common.ids import slug
from pipelines.common.model import Coding, Concept, Ident, Person
from pipelines.common.terminology import valid_code
from pipelines.hl7v2.er7 import Delimiters
from pipelines.hl7v2.fields import components, repetitions, unescape

__all__ = [
    "coding_system",
    "cwe",
    "cx",
    "dtm_date",
    "dtm_datetime",
    "dtm_instant",
    "dtm_offset",
    "dtm_period_end",
    "dtm_text",
    "has_offset",
    "hd_system",
    "xcn",
    "xpn",
]

# Coding-scheme designators (CWE.3) -> FHIR system URIs (mappings.md §7.15).
_SYSTEMS = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SRT": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "RADLEX": "http://www.radlex.org",
    "RADLEXPLAYBOOK": "http://www.radlex.org",
    "UCUM": "http://unitsofmeasure.org",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "ICD-10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "UMLS": "http://terminology.hl7.org/CodeSystem/umls",
    # Table 0078 (abnormal flags) has no THO code system of its own; v2-to-FHIR maps it to v3 interpretation.
    "HL70078": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
}


def coding_system(designator: str, base: str) -> str | None:
    """System URI for a CWE coding-scheme designator; local (L, 99xxx, unknown) -> a namespaced URI."""
    d = designator.strip()
    if not d:
        return None
    known = _SYSTEMS.get(d.upper())
    if known:
        return known
    if re.fullmatch(r"HL7\d{4}", d.upper()):
        return f"http://terminology.hl7.org/CodeSystem/v2-{d[3:]}"
    if re.fullmatch(r"[0-2](\.\d+)+", d):
        return f"urn:oid:{d}"
    return f"{base}/codesystem/{slug(d)}"


@lru_cache(maxsize=8192)
def checked_system(designator: str, code: str, base: str) -> str | None:
    """The system to write ``code`` under: the standard system of the coding-scheme designator when the code
    is valid there (:func:`pipelines.common.terminology.valid_code`: HL7 tables, LOINC check digit, SNOMED CT
    SCTID, DICOM, UCUM), else a local namespace ``<base>/codesystem/<designator>`` (legacy SNOMED-RT codes
    such as ``T-D0050`` under ``http://snomed.info/srt``). Never a standard system for a code it lacks.
    Pure, so cached: a feed repeats its procedure and observation codes."""
    system = coding_system(designator, base)
    if system is None or valid_code(system, code) == code:
        return system
    if system == "http://snomed.info/sct" and re.fullmatch(r"[A-Z]-[0-9A-Z]{4,6}", code):
        return "http://snomed.info/srt"
    return f"{base}/codesystem/{slug(designator)}"


@lru_cache(maxsize=4096)
def cwe(raw: str, d: Delimiters, base: str) -> Concept:
    """CWE/CE -> Concept: triplets 1 and 2 as codings, CWE.9 (or a code-less display) as text. Components are
    split (and CWE.1 into its subcomponents) before unescaping; a code goes under the designator's standard
    system only when valid there (:func:`checked_system`). Pure and immutable, so cached: a feed repeats its
    procedure, reason and observation codes."""
    c = components(raw, d)

    def part(i: int) -> str:
        return unescape(c[i], d).strip() if i < len(c) else ""

    codings: list[Coding] = []
    for code_i, disp_i, sys_i in ((0, 1, 2), (3, 4, 5)):
        raw_code = c[code_i] if code_i < len(c) else ""
        # A subcomponent separator inside CWE.1 (the v2 "71020&IMP" suffix convention) is kept as "&".
        code = "&".join(unescape(p, d) for p in raw_code.split(d.subcomponent)).strip()
        if code:
            display = part(disp_i) or None
            if display and "\n" in display:
                display = " ".join(display.split())
            codings.append(Coding(code=code, system=checked_system(part(sys_i), code, base), display=display))
    text = part(8) or None
    if not codings and part(1):
        text = text or part(1)
    return Concept(codings=tuple(codings), text=text)


@lru_cache(maxsize=4096)
def hd_system(raw_hd: str, d: Delimiters, base: str, sep: str) -> str | None:
    """HD (namespace, universal id, type) -> a system URI: OID/UUID/URI when given, else base/<namespace>.
    Pure, so cached: a feed repeats its assigning authorities on every message."""
    parts = [unescape(p, d).strip() for p in raw_hd.split(sep)]
    ns = parts[0] if parts else ""
    uid = parts[1] if len(parts) > 1 else ""
    kind = parts[2].upper() if len(parts) > 2 else ""
    if uid and (kind == "ISO" or re.fullmatch(r"[0-2](\.\d+)+", uid)):
        return f"urn:oid:{uid}"
    if uid and kind == "UUID":
        return f"urn:uuid:{uid.lower()}"
    if uid and kind in ("URI", "URL"):
        return uid
    if ns:
        if re.match(r"^(https?|urn):", ns):
            return ns
        return f"{base}/{slug(ns)}"
    return None


def cx(raw: str, d: Delimiters, base: str, fallback_system: str) -> list[Ident]:
    """CX (repeating) -> identifiers. CX.4 assigning authority -> system; CX.5 -> type (table 0203)."""
    out: list[Ident] = []
    for rep in repetitions(raw, d):
        c = rep.split(d.component)
        value = unescape(c[0], d).strip() if c else ""
        if not value:
            continue
        system = hd_system(c[3], d, base, d.subcomponent) if len(c) > 3 and c[3] else None
        type_code = unescape(c[4], d).strip() if len(c) > 4 else ""
        out.append(Ident(system=system or fallback_system, value=value, type_code=type_code or None))
    return out


def _first_sub(raw_component: str, d: Delimiters) -> str:
    """First subcomponent of a raw component, unescaped (FN.1 surname of an XPN.1 / XCN.2)."""
    return unescape(raw_component.split(d.subcomponent, 1)[0], d).strip()


def xpn(raw: str, d: Delimiters) -> tuple[str | None, list[str], list[str], list[str]]:
    """XPN (first repetition) -> (family, given, prefix, suffix). XPN.1 (FN) is split into subcomponents
    before unescaping: the family name is FN.1, so ``Smith\\T\\Jones`` stays ``Smith&Jones``."""
    raw_c = components(raw, d)
    c = [unescape(p, d).strip() for p in raw_c]
    family = _first_sub(raw_c[0], d) if raw_c and raw_c[0] else None
    given = [g for g in (c[1] if len(c) > 1 else "", c[2] if len(c) > 2 else "") if g]
    suffix = [s for s in (c[3] if len(c) > 3 else "", c[5] if len(c) > 5 else "") if s]
    prefix = [c[4]] if len(c) > 4 and c[4] else []
    return family or None, given, prefix, suffix


def xcn(raw: str, d: Delimiters, base: str, fallback_system: str) -> Person | None:
    """XCN/CNN/NDL.1 -> Person: XCN.1 id (XCN.9 authority), XCN.2-6 name (v2-to-FHIR XCN[Practitioner]).
    A new (mutable) Person each call, built from the cached reading of the field."""
    if not raw:
        return None
    parsed = _xcn(raw, d, base, fallback_system)
    if parsed is None:
        return None
    family, given, prefix, suffix, text, ident = parsed
    return Person(
        identifiers=[ident] if ident is not None else [],
        family=family,
        given=list(given),
        prefix=list(prefix),
        suffix=list(suffix),
        text=text,
    )


_XcnParts = tuple[str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...], str | None, Ident | None]


@lru_cache(maxsize=4096)  # pure; a feed repeats its radiologists and requesters on every message
def _xcn(raw: str, d: Delimiters, base: str, fallback_system: str) -> _XcnParts | None:
    first = raw.split(d.repetition, 1)[0]
    c = first.split(d.component)
    if len(c) == 1 and d.subcomponent in first:  # NDL: CNN is carried in subcomponents of NDL.1
        c = first.split(d.subcomponent)
    vals = [unescape(p, d).strip() for p in c]
    ident = vals[0] if vals else ""
    family = _first_sub(c[1], d) if len(c) > 1 else ""  # XCN.2 (FN): surname is its first subcomponent
    given = tuple(g for g in (vals[2] if len(vals) > 2 else "", vals[3] if len(vals) > 3 else "") if g)
    suffix = tuple(s for s in (vals[4] if len(vals) > 4 else "", vals[6] if len(vals) > 6 else "") if s)
    prefix = (vals[5],) if len(vals) > 5 and vals[5] else ()
    if family.lower().startswith("unk") and not ident.strip("^"):
        family = ""
    text: str | None = None
    identifier: Ident | None = None
    if ident and not (len(c) == 2 and "," in ident):
        system = hd_system(c[8], d, base, d.subcomponent) if len(c) > 8 and c[8] else None
        identifier = Ident(system=system or fallback_system, value=ident)
    elif ident and not family:
        text = ident  # "01^LOCHLEAR, JUDY"-style: a name in the id component
    if not (family or given or text) and identifier is None:
        return None
    return family or None, given, prefix, suffix, text, identifier


_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


@functools.lru_cache(maxsize=4096)  # pure; the three readings below share one parse of each value
def _split_dtm(raw: str) -> tuple[tuple[str, ...], str | None] | None:
    value = raw.strip().split(" ")[0]
    m = _DTM.match(value)
    if not m:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    if (month and not 1 <= int(month) <= 12) or (day and not 1 <= int(day) <= 31):
        return None
    if (hour and int(hour) > 23) or (minute and int(minute) > 59) or (second and int(second) > 59):
        return None
    parts = [p for p in (year, month, day, hour, minute, second) if p]
    if frac and second:
        parts[-1] += frac
    offset = f"{tz[:3]}:{tz[3:]}" if tz else None
    return tuple(parts), offset


@functools.lru_cache(maxsize=4096)  # pure; MSH-7/OBR-7/OBR-22 recur within and across messages
def dtm_date(raw: str) -> str | None:
    split = _split_dtm(raw)
    if split is None:
        return None
    p = split[0]
    return "-".join(p[:3])


@functools.lru_cache(maxsize=4096)  # pure; MSH-7/OBR-7/OBR-22 recur within and across messages
def dtm_datetime(raw: str, default_offset: str) -> str | None:
    """DTM -> FHIR dateTime; a time without offset gets ``default_offset`` (FHIR requires one)."""
    split = _split_dtm(raw)
    if split is None:
        return None
    p, offset = split
    date = "-".join(p[:3])
    if len(p) <= 3:
        return date
    while len(p) < 6:  # FHIR dateTime: a time has hours, minutes and seconds
        p = (*p, "00")
    time = ":".join(p[3:6])
    return f"{date}T{time}{offset or default_offset}"


@functools.lru_cache(maxsize=4096)  # pure; MSH-7/OBR-7/OBR-22 recur within and across messages
def dtm_instant(raw: str, default_offset: str) -> str | None:
    """DTM -> FHIR instant (seconds and offset required; missing minutes/seconds are ``00``, a missing offset
    is ``default_offset``). None when the value has no time of day: a date-only MSH-7/OBR-22 (DTM precision
    YYYYMMDD, HL7 v2.5.1 2.A.22) never becomes midnight, a time that was never sent."""
    split = _split_dtm(raw)
    if split is None or len(split[0]) < 4:
        return None
    p = list(split[0])
    offset = split[1]
    while len(p) < 6:
        p.append("00")
    return f"{p[0]}-{p[1]}-{p[2]}T{p[3]}:{p[4]}:{p[5]}{offset or default_offset}"


def dtm_period_end(start: str | None, raw_obr8: str, tz: str) -> str | None:
    """The end of a period as a FHIR dateTime (OBR-8 after OBR-7 ``start``), or None when there is no start, the
    end does not parse, or it lies before the start (FHIR per-1: such a period is never published)."""
    end = dtm_datetime(raw_obr8, tz) if start and raw_obr8.strip() else None
    if end is None or start is None:
        return None
    try:
        if "T" in start and "T" in end and datetime.fromisoformat(end) < datetime.fromisoformat(start):
            return None  # a period ending before it starts (FHIR per-1) is not published
    except ValueError:
        return None
    return end


def dtm_offset(raw: str) -> str | None:
    """The ``+hh:mm`` offset a DTM value carries (``20261130101500+0100`` -> ``+01:00``), else None."""
    value = raw.strip()
    if not has_offset(value):
        return None
    sign = "+" if "+" in value[8:] else "-"
    digits = value[8:].rsplit(sign, 1)[1]
    if len(digits) != 4 or not digits.isdigit() or int(digits[:2]) > 14 or int(digits[2:]) > 59:
        return None
    return f"{sign}{digits[:2]}:{digits[2:]}"


def has_offset(raw: str) -> bool:
    """Does a DTM value carry a UTC offset (``+``/``-`` after the date)?"""
    value = raw.strip()
    return len(value) > 8 and ("+" in value[8:] or "-" in value[8:])


_DTM_TEXT = re.compile(r"(\d{4})(?:(\d{2})(?:(\d{2})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?")
_TM_TEXT = re.compile(r"(\d{2})(\d{2})?(\d{2}(?:\.\d{1,4})?)?([+-]\d{4})?")


def dtm_text(raw: str, *, time_only: bool = False) -> str | None:
    """A DT/DTM/TS (or, ``time_only``, TM) value as narrative text, like the SR side's DATE/TIME/DATETIME
    items: ISO 8601 with the precision it was written with and an offset only when it carries one
    (``202611300945`` -> ``2026-11-30 09:45``, ``20261130094512.5+0200`` -> ``2026-11-30 09:45:12.5 +02:00``,
    TM ``0930`` -> ``09:30``). No zone is assumed for text. None when the value is not one."""
    value = raw.strip()
    if time_only:
        t = _TM_TEXT.fullmatch(value)
        if t is None:
            return None
        clock, off = _clock(t.group(1), t.group(2), t.group(3)), t.group(4)
        return clock + (f" {off[:3]}:{off[3:]}" if off else "")
    m = _DTM_TEXT.fullmatch(value)
    if m is None:
        return None
    year, month, day, time, off = m.groups()
    out = "-".join(p for p in (year, month, day) if p)
    if time:
        out += " " + _clock(time[:2], time[2:4] or None, time[4:] or None)
    return out + (f" {off[:3]}:{off[3:]}" if off else "")


def _clock(hh: str, mm: str | None, ss: str | None) -> str:
    return ":".join(p for p in (hh, mm, ss) if p)
