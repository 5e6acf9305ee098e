"""OBX rows of one order group -> report sections, coded findings, study UIDs and attached documents.

Rules (mappings.md §2, §7.3-§7.5, §7.7): text rows (TX/FT/ST, and CE/CWE with text but no code) are
joined in message order into one text per section, line breaks kept, escapes decoded after splitting.
The section comes from the OBX-3 suffix (``71020&IMP``, ``&GDT``), else a LOINC/DCM heading code, else a
heading word in the OBX-3 text, else a heading line inside the text ("IMPRESSION:"), else the section of
the previous text row; text before any heading goes to the whole-report section. Study Instance UIDs come
from OBX 113014 / "Study Instance UID" rows (ST or HD, IHE RAD-28/RAD-128); encapsulated reports (ED) become
attachments; coded and numeric rows become findings.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from functools import lru_cache

from pipelines.common.ids import uid_ok
from pipelines.common.model import Attachment, Coding, Concept, Finding, Section
from pipelines.common.sections import LONGEST_HEADING, section_for_code, section_for_heading
from pipelines.common.terminology import tho_code
from pipelines.hl7v2 import datatypes as dt
from pipelines.hl7v2.encapsulated import read_ed_run, reference_pointer
from pipelines.hl7v2.er7 import Delimiters
from pipelines.hl7v2.fields import field as fld
from pipelines.hl7v2.fields import repetitions, unescape
from pipelines.hl7v2.status import obx_status

__all__ = ["GroupContent", "read_observations", "retracted"]

_SUFFIX = {
    "GDT": "findings", "FND": "findings", "FIND": "findings", "ANT": "findings", "BODY": "findings",
    "IMP": "impression", "SUM": "impression",
    "REC": "recommendation",
    "ADT": "addendum", "ADN": "addendum", "ADD": "addendum", "ADM": "addendum",
    "HIS": "history", "HX": "history", "HST": "history", "IND": "history", "CLI": "history",
    "TCM": "procedure", "TEC": "procedure", "TECH": "procedure", "PRO": "procedure", "PROC": "procedure",
    "CMP": "comparison", "COMP": "comparison",
    "CON": "conclusion", "CONC": "conclusion",
}  # fmt: skip
_UID_LABELS = re.compile(r"(study|series|sop|sr)\s*(instance)?\s*uid|sop class", re.IGNORECASE)
_TEXT_TYPES = frozenset({"TX", "FT", "ST", "TEXT", "STR"})
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


@dataclass(slots=True)
class GroupContent:
    sections: list[Section] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    study_uids: list[str] = field(default_factory=list)
    forms: list[Attachment] = field(default_factory=list)
    text_statuses: list[str] = field(default_factory=list)
    observations: int = 0  # OBX rows (NTE comments alone never make a report)
    invalid_uids: int = 0
    retracted: int = 0  # OBX rows left out because OBX-11 is W (wrong patient) or D (deleted)
    broken: list[str] = field(default_factory=list)  # why an ED row's document cannot be read (no text, no PHI)


def read_observations(
    obx_rows: list[list[str]], d: Delimiters, base: str, charset: str, tz: str = "+00:00"
) -> GroupContent:
    """``tz``: the offset of times that carry none (OBX-14 of findings)."""
    out = GroupContent()
    texts: dict[str, list[str]] = {}
    order: list[str] = []
    current: str | None = None
    last: str | None = None  # section of the latest OBX row (where a following NTE belongs)
    kinds: dict[tuple[str, str], _Obx3] = {}  # OBX-2/OBX-3 repeat on every line of a section: classify once
    skipping = False  # NTE comments of a retracted OBX are retracted with it
    rep, esc, clean = d.repetition, d.escape, d.clean
    observations = 0
    ed_run: list[tuple[int, tuple[str, str], str]] = []  # (row, (OBX-3, OBX-4), OBX-5) of consecutive ED rows
    for n, obx in enumerate(obx_rows, start=1):
        if obx[0] == "NTE":  # NTE-3 comment: narrative of the section of the row it follows
            if skipping:
                continue
            comment = [line for line in _text_lines(fld(obx, 3), "FT", d, charset) if line.strip()]
            if comment:
                note_key = last or "report"
                if note_key not in texts:
                    texts[note_key] = []
                    order.append(note_key)
                texts[note_key].extend(comment)
            continue
        size = len(obx)
        status = obx[11].strip() if size > 11 else ""
        if not status and size > 10:
            status = _result_status(obx)  # OBX-11 drifted to OBX-10
        skipping = status in _RETRACTED_ANY_CASE or (len(status) > 1 and _retracted_word(status))
        if skipping:
            out.retracted += 1
            continue
        observations += 1
        raw2 = obx[2] if size > 2 else ""
        raw3 = obx[3] if size > 3 else ""
        kind = kinds.get((raw2, raw3))
        if kind is None:
            kind = kinds[(raw2, raw3)] = _classify(raw2, raw3, d)
        vtype, section, uid_row, study_row, coded_text = kind
        raw5 = obx[5] if size > 5 else ""
        if raw5 == '""':
            raw5 = ""  # the HL7 null value (v2.5.1 2.5.3): no value, never the two quote marks as text
        if uid_row:
            if study_row:
                uid = _uid_value(raw5, d)
                if uid and uid_ok(uid):
                    if uid not in out.study_uids:
                        out.study_uids.append(uid)
                elif uid:
                    out.invalid_uids += 1
            continue
        if vtype == "RP" and (pointer := reference_pointer(raw5, d)) is not None:
            out.forms.append(pointer)
            continue
        if vtype == "ED":
            # Consecutive ED rows of one observation (same OBX-3 and OBX-4 sub-ID, 7.4.2.4) are one document
            # sent in pieces, as consecutive text rows are one text: read once, joined.
            ed_key = (raw3, obx[4] if size > 4 else "")
            if ed_run and ed_run[-1][0] == n - 1 and ed_run[-1][1] == ed_key:
                ed_run.append((n, ed_key, raw5))
            else:
                _flush_encapsulated(ed_run, out, d, charset)
                ed_run = [(n, ed_key, raw5)]
            continue
        if vtype in _CODED:
            is_text = not raw5.split(d.component, 1)[0].strip()  # CE without a code: text ("^Mass left lobe")
            plain = False
        else:
            # OBX-2 left empty on a row whose OBX-3 names a report section (``71020&GDT``, a LOINC heading): the
            # chapter 7 narrative convention says what it is, text (it was a finding coded "71020&GDT")
            is_text = (vtype in _TEXT_TYPES or (not vtype and section is not None)) and not coded_text
            # the common dictated line: nothing to split, decode or clean (the fast path of _text_lines)
            plain = rep not in raw5 and esc not in raw5 and (clean or raw5.isprintable())
        if is_text:
            lines = [raw5.rstrip()] if plain else _text_lines(raw5, vtype, d, charset)
            if section is not None:  # a tagged row (OBX-3 suffix or code): every line goes to its section
                bucket = texts.get(section)
                if bucket is None:
                    bucket = texts[section] = []
                    order.append(section)
                bucket.extend(lines)
                last = section
            else:
                for i, line in enumerate(lines):  # untagged: heading lines ("IMPRESSION:") switch the section
                    # A line that is not indented (lines are right-stripped) is never a heading when its first
                    # colon comes after 40 characters, or when it has none, is longer than any heading word and
                    # does not end in "." (section_for_heading's own answer, without the call).
                    colon = line.find(":")
                    prose = bool(line) and not line[0].isspace() and (
                        colon > 40 or (colon < 0 and len(line) > LONGEST_HEADING and line[-1] != ".")
                    )
                    heading = None if prose else section_for_heading(line)
                    if heading is None and i == 0:
                        heading = _leading_word(line)
                    if heading is not None:
                        current = heading[0]
                    key = current or "report"
                    bucket = texts.get(key)
                    if bucket is None:
                        bucket = texts[key] = []
                        order.append(key)
                    bucket.append(line)
                    last = key
            if status:
                out.text_statuses.append(status)
            continue
        # A repeating OBX-5 of a coded, numeric or date result holds several results (HL7 v2.5.1 7.4.2.5;
        # v2-to-FHIR: separate Observations): one finding each, the first keeps the id it always had.
        values = raw5.split(rep) if rep in raw5 and vtype in _REPEATING else [raw5]
        for r, value5 in enumerate(values):
            finding = _finding(obx, vtype, raw3, value5, d, base, section or "findings", n, tz)
            if finding is None:
                continue
            if r:
                finding.key += f"|rep{r + 1}"
            if size > 14 and obx[14].strip():  # OBX-14 date/time of the observation (v2-to-FHIR: effective)
                finding.effective = dt.dtm_datetime(obx[14], tz)
            out.findings.append(finding)
            last = finding.section
            said = section is not None and (section in texts or section == "impression")
            if said and section is not None and finding.value_concept is not None:
                # A coded line inside a dictated section ("H20^Heart size normal" among IMP lines): keep its
                # words in the narrative too, so the section text reads as dictated.
                # A coded impression is also the impression's narrative (its entry goes to findings: ENTRY_TYPES).
                words = finding.value_concept.text or next((c.display for c in finding.value_concept.codings), None)
                if words:
                    if section not in texts:
                        texts[section] = []
                        order.append(section)
                    texts[section].append(words)
    _flush_encapsulated(ed_run, out, d, charset)
    out.observations = observations
    for key in order:
        text = "\n".join(texts[key]).strip("\n")
        if text.strip():
            out.sections.append(Section(key=key, text=text))
    return out


_CODED = frozenset({"CE", "CWE", "CNE", "CF"})
#: value types (HL7 v2.5.1 table 0125) whose OBX-5 is a plain value a finding can carry as ``valueString``
#: (besides text, coded and numeric rows). Pointers and composites (RP reference pointer, CX, XPN, XCN, XAD,
#: XTN, EI, HD, MO, CP, ...) are not clinical findings: such rows are counted as observations, never published.
_PLAIN_VALUES = _TEXT_TYPES | frozenset({"DT", "TM", "DTM", "TS", "ID", "IS", ""})
# (value type, section, is a UID row, is a Study UID row, coded concept whose text value is a finding)
_Obx3 = tuple[str, str | None, bool, bool, bool]


@lru_cache(maxsize=4096)  # pure and immutable; a feed repeats its OBX-2/OBX-3 pairs on every message
def _classify(raw2: str, raw3: str, d: Delimiters) -> _Obx3:
    vtype = raw2.split(d.component)[0].strip().upper()
    c3 = raw3.split(d.component)
    code1_raw = c3[0] if c3 else ""
    label = unescape(c3[1], d).strip() if len(c3) > 1 else ""
    code1 = unescape(code1_raw.split(d.subcomponent)[0], d).strip()
    if code1 == "113014" or _uid_label(label) or _uid_label(code1):
        return vtype, None, True, "study" in label.lower() or code1 == "113014", False
    section = _section_of(code1_raw, code1, label, c3, d)
    system3 = unescape(c3[2], d).strip() if len(c3) > 2 else ""
    # A coded concept (e.g. SNOMED "Liver mass") with a text value is a finding, not narrative.
    coded_text = bool(system3 and section is None and d.subcomponent not in code1_raw and code1)
    return vtype, section, False, False, coded_text


# OBX-11 codes (table 0085) that cannot be an OBX-10 "nature of abnormal test" (table 0080: A, N, R, S).
_DRIFTED_STATUS = frozenset({"F", "P", "C", "X", "D", "W", "I", "U", "V", "B", "FINAL", "PRELIM", "PRELIMINARY"})


def _result_status(obx: list[str]) -> str:
    """OBX-11, or OBX-10 when a sender shifted the status one field left (field drift, mappings.md §7.14)."""
    status = obx[11].strip() if len(obx) > 11 else ""
    if not status and len(obx) > 10 and obx[10].strip().upper() in _DRIFTED_STATUS:
        status = obx[10].strip()
    return status


# OBX-11 (HL7 table 0085) values that withdraw a row: W "post original as wrong, e.g. transmitted for wrong
# patient", D "delete the OBX record". Such a row never reaches text, notes, findings or narrative.
_RETRACTED = frozenset({"W", "D"})
_RETRACTED_ANY_CASE = _RETRACTED | frozenset({"w", "d"})  # a one-letter status is read case-blind
# The same two values as word statuses (mappings.md §7.14: senders that write "Final" write these too); the
# status vocabulary (status.py) reads them as entered-in-error, so a row is never both withdrawn and published.
_RETRACTED_WORDS = frozenset({
    "WRONG", "WRONG PATIENT", "DELETED", "DELETE", "ENTERED IN ERROR", "IN ERROR", "ERROR", "WITHDRAWN",
})  # fmt: skip


@functools.lru_cache(maxsize=256)
def _retracted_word(status: str) -> bool:  # cached: a feed repeats a handful of word statuses on every row
    return " ".join(status.replace("_", " ").replace("-", " ").upper().split()) in _RETRACTED_WORDS


def retracted(obx: list[str]) -> bool:
    """Is this OBX withdrawn by its result status (OBX-11 ``W`` or ``D`` or their word forms, also when drifted
    to OBX-10)?"""
    status = _result_status(obx).strip()
    return status.upper() in _RETRACTED or (len(status) > 1 and _retracted_word(status))


def _uid_label(text: str) -> bool:
    low = text.lower()
    return ("uid" in low or "sop class" in low) and _UID_LABELS.search(text) is not None


def _leading_word(line: str) -> tuple[str, str] | None:
    """IHE RAD-28 "SR Text" rows name their section by the first word of the value ("Findings The ...")."""
    word = line.strip().partition(" ")[0]
    if len(word) > 24:  # longer than any heading word and its punctuation
        return None
    key = _LABEL_WORDS.get(word.rstrip(":-.,").lower())
    return (key, line) if key else None


def _section_of(code1_raw: str, code1: str, label: str, c3: list[str], d: Delimiters) -> str | None:
    for sep in (d.subcomponent, "&"):  # "&GDT" is written with "&" even where MSH-2 declares no subcomponents
        if sep in code1_raw:
            suffix = code1_raw.rsplit(sep, 1)[1].strip().upper()
            if suffix in _SUFFIX:
                return _SUFFIX[suffix]
    if code1.upper() in _SUFFIX and len(code1) <= 4:
        return _SUFFIX[code1.upper()]  # a bare suffix code as the identifier ("IMP^Impression^L")
    for code in (code1, unescape(c3[3], d).strip() if len(c3) > 3 else ""):
        if code:
            key = section_for_code(code)
            if key:
                return key
    if code1 == "18748-4":
        return "report"
    words = re.findall(r"[A-Za-z]+", label.lower())
    if words and (words[-1] in _LABEL_WORDS or words[0] in _LABEL_WORDS):
        return _LABEL_WORDS[words[-1] if words[-1] in _LABEL_WORDS else words[0]]
    return None


# Heading words accepted in an OBX-3 text ("Procedure Findings", "Study recommendation", "SR Text" excluded).
_LABEL_WORDS = {
    "findings": "findings", "impression": "impression", "impressions": "impression",
    "recommendation": "recommendation", "recommendations": "recommendation", "history": "history",
    "comparison": "comparison", "conclusion": "conclusion", "conclusions": "conclusion", "addendum": "addendum",
    "technique": "procedure", "indication": "history", "indications": "history",
}  # fmt: skip


def _text_lines(raw5: str, vtype: str, d: Delimiters, charset: str) -> list[str]:
    if vtype not in _CODED and d.escape not in raw5:
        if d.repetition not in raw5 and (d.clean or raw5.isprintable()):
            return [raw5.rstrip()]  # the common dictated line: nothing to split, decode or clean
        if raw5.isprintable() or (d.clean and "\n" not in raw5 and "\r" not in raw5):
            # repetitions without escapes or line breaks: one line each, nothing to decode or clean
            return [line.rstrip() for line in raw5.split(d.repetition)]
    lines: list[str] = []
    for rep in repetitions(raw5, d) or [""]:
        if vtype in ("CE", "CWE", "CNE", "CF"):
            parts = rep.split(d.component)
            value = unescape(parts[1], d, charset) if len(parts) > 1 else ""
        else:
            value = unescape(rep, d, charset)
        lines.extend(value.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return [line.rstrip() for line in lines]


def _uid_value(raw5: str, d: Delimiters) -> str:
    parts = [unescape(p, d).strip() for p in raw5.split(d.component)]
    if len(parts) > 1 and parts[1] and uid_ok(parts[1]):
        return parts[1]
    return parts[0] if parts else ""


def _flush_encapsulated(
    run: list[tuple[int, tuple[str, str], str]], out: GroupContent, d: Delimiters, charset: str
) -> None:
    """Read one run of ED rows (one observation, see the caller) into ``out.forms``; a document that was sent
    but cannot be read is never dropped in silence (``out.broken``)."""
    if not run:
        return
    forms, broken = read_ed_run([raw5 for _, _, raw5 in run], d, charset)
    out.forms.extend(forms)
    if broken is not None:
        out.broken.append(f"OBX {run[0][0]} (ED): {broken}")
    run.clear()


def _finding(
    obx: list[str], vtype: str, raw3: str, raw5: str, d: Delimiters, base: str, section: str, n: int, tz: str
) -> Finding | None:
    code = dt.cwe(raw3, d, base)
    if not code:
        return None
    f = Finding(code=code, section=section, key=f"obx{n}|{fld(obx, 1)}|{fld(obx, 4)}")
    if vtype in ("CE", "CWE", "CNE", "CF"):
        f.value_concept = dt.cwe(raw5, d, base)
    elif vtype in ("NM", "SN"):
        q = _quantity(raw5, fld(obx, 6), d, base)
        if q is None:
            f.value_string = unescape(raw5, d).replace(d.component, " ").strip() or None
        else:
            f.value_quantity, f.value_comparator = q[:3], q[3]
    elif vtype in _DATE_TYPES and (when := _date_value(raw5, vtype, d, tz)) is not None:
        if vtype == "TM":
            f.value_time = when
        else:
            f.value_date_time = when
        # narrative shows the value as sent (precision, offset only when sent), never the FHIR padding/zone
        first = unescape(raw5.split(d.repetition)[0].split(d.component)[0], d)
        f.value_display = dt.dtm_text(first, time_only=vtype == "TM")
    elif vtype in _PLAIN_VALUES:
        value = " ".join(
            " ".join(unescape(c, d) for c in r.split(d.component) if c.strip()) for r in repetitions(raw5, d)
        ).strip()
        units = unescape(fld(obx, 6).split(d.component)[0], d).strip()
        f.value_string = (f"{value} {units}".strip() if units and not value.endswith(units) else value) or None
    else:
        return None  # a pointer or composite (RP, CX, XPN, ...): not a finding
    if f.value_concept is None and f.value_quantity is None and f.value_string is None and not (
        f.value_date_time or f.value_time
    ):
        return None
    f.status = obx_status(_result_status(obx))
    raw8 = fld(obx, 8)
    if not raw8.strip() and "HL70078" in fld(obx, 9).upper():
        raw8 = fld(obx, 9)  # field drift seen in RAD-128 samples: abnormal flag (table 0078) one field late
    flag = unescape(raw8.split(d.component)[0], d).strip()
    if flag:
        # OBX-8 (table 0078) -> v3 ObservationInterpretation only when that code system has the flag.
        known = tho_code("v3-ObservationInterpretation", flag)
        f.interpretation = (
            Concept(codings=(Coding(code=known, system=_INTERPRETATION),)) if known else Concept(text=flag)
        )
    c15 = fld(obx, 15)
    if c15 and "RADLEX" in c15.upper():
        f.category = dt.cwe(c15, d, base)
    return f


_DATE_TYPES = frozenset({"DT", "DTM", "TS", "TM"})
#: value types whose OBX-5 repetitions are separate results (text rows are lines; plain values are joined)
_REPEATING = frozenset({"CE", "CWE", "CNE", "CF", "NM", "SN"}) | _DATE_TYPES
_TM = re.compile(r"([01]\d|2[0-3])([0-5]\d)?([0-5]\d)?(\.\d{1,4})?")


def _date_value(raw5: str, vtype: str, d: Delimiters, tz: str) -> str | None:
    """A DT/DTM/TS result as a FHIR ``dateTime`` with the precision it was written with (HL7 v2.5.1 2.A.21,
    2.A.22; TS.1), or a TM result without an offset as a FHIR ``time`` (2.A.75: ``0930`` is ``09:30:00``); None
    (kept as text, as before) when the value is not one (a TM with an offset has no FHIR ``time``)."""
    value = unescape(raw5.split(d.repetition)[0].split(d.component)[0], d).strip()
    if vtype != "TM":
        return dt.dtm_datetime(value, tz) if value else None
    m = _TM.fullmatch(value)
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    return f"{hh}:{mm or '00'}:{ss or '00'}{frac or ''}"


# A number as HL7 v2 NM writes it (2.A.47), optionally after an SN comparator (2.A.71 SN.1).
_NUMBER = re.compile(r"\s*(<=|>=|<>|<|>|=)?\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*")
#: SN.1 comparators (HL7 v2.5.1 2.A.71) FHIR Quantity.comparator can say; ``=`` is the plain value, ``<>``
#: (not equal) has no FHIR comparator: such a value stays text.
_SN_COMPARATORS = {"": None, "=": None, "<": "<", ">": ">", "<=": "<=", ">=": ">="}


def _quantity(
    raw5: str, raw6: str, d: Delimiters, base: str
) -> tuple[float | int, str | None, str | None, str | None] | None:
    """NM / SN -> (value, unit, UCUM code, comparator) or None (kept as text).

    SN is ``comparator ^ num1 ^ separator/suffix ^ num2`` (HL7 v2.5.1 2.A.71): ``<^5`` is "less than 5", a
    quantity with comparator ``<`` (v2-to-FHIR SN -> Quantity.comparator), never the value 5; a range or ratio
    (separator and num2) and ``<>`` stay text. A value keeps the precision it was written with: ``5`` is the
    integer 5, not ``5.0`` (FHIR decimal precision is significant). An NM written ``<5`` (a common sender
    variant) reads like SN."""
    text = raw5.split(d.repetition)[0]
    parts = text.split(d.component)
    if len(parts) > 2 and parts[2].strip():
        return None  # SN ratio/range: kept as text
    written = parts[0]
    if len(parts) > 1 and parts[1].strip():
        if parts[0].strip() not in _SN_COMPARATORS and parts[0].strip() != "<>":
            return None  # two numbers without a separator: not one value, kept as text
        written = parts[0].strip() + parts[1]  # SN: comparator and num1
    m = _NUMBER.fullmatch(written)
    if m is None or (m.group(1) or "") not in _SN_COMPARATORS:
        return None
    literal = m.group(2)
    try:
        value: float | int = int(literal) if literal.lstrip("+-").isdigit() else float(literal)
    except ValueError:
        return None
    units = raw6.split(d.component)
    unit = unescape(units[0], d).strip() if units else ""
    ucum_system = units[2].strip().upper() if len(units) > 2 else ""
    ucum = unit if unit and ucum_system in ("UCUM", "") and re.fullmatch(r"[A-Za-z0-9%/.*\[\]{}^-]+", unit) else None
    return value, unit or None, ucum if ucum_system == "UCUM" else None, _SN_COMPARATORS[m.group(1) or ""]
