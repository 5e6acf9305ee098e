"""TID 2000 narrative reports (Basic Text, Enhanced, Comprehensive SR) -> sections, findings, key images.

* Headings (CONTAINERs under the root) map to EU Composition sections by code: CID 7001 LOINC or the
  retired DCM 1210xx codes (:func:`pipelines.common.sections.section_for_code`), else by the heading's
  meaning; anything unrecognised is findings (mappings.md §4.2).
* TEXT items become section narrative; CODE and NUM items become narrative lines *and*
  ObservationFindingEuImaging findings in that section. A CONTINUOUS container is read as one running
  text (DCMTK-style "The lesion measures 1.5 cm ..."), a SEPARATE one line by line.
* A content item's own children are read by relationship type (PS3.3 C.17.3.2.4): each with a value is a
  line after its source's line (``Inferred from: ...`` for INFERRED FROM, ``Acquisition context: ...`` and
  ``Observation context: ...`` for HAS ACQ / HAS OBS CONTEXT; HAS PROPERTIES and HAS CONCEPT MOD are said by
  the child's own concept name); CODE and NUM evidence and properties are findings too, concept modifiers and
  context qualify their source and are narrative only. In a CONTINUOUS container these lines follow the
  running text. References without a value (IMAGE, COMPOSITE, WAVEFORM, SCOORD, TCOORD below a content item)
  are not narrative: the referenced instances are the study's. A heading's own context items (TID 1001 under
  a section heading) are ``Observation context: ...`` lines of that section, never findings.
* IMAGE items directly under a heading (or in a Key Images 121180 container) become
  ImagingSelectionKeyImageEuImaging entries of the section (``DiagnosticReport.extension[finding]``).
* Root-level observation context (observer, language, procedure reported) is not narrative; the
  Person Observer Name becomes an author when the header names none.
"""

from __future__ import annotations

import re
from typing import Any

from pipelines.common import fhir
from pipelines.common.ids import uid_ok, uuid_for
from pipelines.common.model import Concept, ExtraResource, Finding, Report, Section
from pipelines.common.sections import section_for_code, section_for_heading
from pipelines.dicom_sr.build import accession_ref, study_ref
from pipelines.dicom_sr.codes import coding, concept, ucum
from pipelines.dicom_sr.header import Header, dicom_date, person_from_pn
from pipelines.dicom_sr.reader import Item
from pipelines.dicom_sr.status import observation_status
from pipelines.output.profiles import IM

__all__ = ["apply_narrative", "format_num", "narrative_when", "observer_authors"]

_NARRATIVE_NAMES = {"121071", "121073", "121075", "121077", "121065", "121069", "121050", "121106"}
_SKIP_CONTAINERS = {"126010", "126011", "111028", "113811", "113702", "113706", "113819", "113705"}
_CONTEXT_RELS = {"HAS OBS CONTEXT", "HAS CONCEPT MOD", "HAS ACQ CONTEXT"}
#: How the narrative reads a content item's children by relationship type (PS3.3 C.17.3.2.4): the target is
#: evidence the source was inferred from, a property of the source, a modifier of its concept, or the context of
#: its acquisition or observation. Each child with a value is a line after its source's line, introduced by
#: this text when the relationship is not already said by the child's concept name.
_RELATED_PREFIX = {"INFERRED FROM": "Inferred from", "HAS ACQ CONTEXT": "Acquisition context",
                   "HAS OBS CONTEXT": "Observation context"}  # fmt: skip
#: Children that qualify their source rather than state an observation of their own: narrative only, no finding.
_QUALIFIERS = {"HAS CONCEPT MOD", "HAS ACQ CONTEXT", "HAS OBS CONTEXT"}


def observer_authors(root: list[Item], report: Report) -> None:
    """TID 1002 Person Observer Name (121008, or any PNAME observation context) -> author."""
    if report.authors:
        return
    for item in root:
        if (
            item.rel == "HAS OBS CONTEXT"
            and item.vtype in ("PNAME", "TEXT")
            and item.text
            and (item.vtype == "PNAME" or item.is_("121008"))
        ):
            person = person_from_pn(item.text)
            if person is not None:
                report.authors.append(person)


def apply_narrative(root: list[Item], h: Header, report: Report) -> bool:
    """Add sections, findings and key images for a TID 2000-style tree; True if any content was found."""
    state = _State(h, report)
    for item in root:
        if item.rel in _CONTEXT_RELS:
            if item.is_("121058") and (item.code or item.text):
                label = item.code.meaning if item.code else item.text
                state.add("procedure", f"Procedure reported: {label}")
            continue
        if item.vtype == "CONTAINER":
            if item.name is not None and item.name.value in _SKIP_CONTAINERS:
                continue
            state.heading(item)
        elif item.vtype == "IMAGE" and item.rel == "CONTAINS":
            key = _section_of(item) or "findings"
            state.key_image(item, key)
            state.related(item, key)
        else:
            key = _section_of(item) or "findings"
            state.content(item, key, labelled=True)
    state.flush()
    for key, lines in state.sections.items():
        report.sections.append(Section(key=key, text="\n".join(lines)))
    conclusion = [s.text for s in report.sections if s.key in ("impression", "conclusion")]
    if conclusion:
        report.conclusion = "\n\n".join(conclusion)
    return state.found


def _section_of(item: Item) -> str | None:
    if item.name is None:
        return None
    key = section_for_code(item.name.value)
    if key is None and item.name.meaning:
        hit = section_for_heading(item.name.meaning)
        key = hit[0] if hit else None
    return key


class _State:
    def __init__(self, h: Header, report: Report) -> None:
        self.h, self.report = h, report
        self.sections: dict[str, list[str]] = {}
        self.found = False
        self._evidence = _evidence_index(h)

    def add(self, key: str, line: str) -> None:
        if line.strip():
            self.sections.setdefault(key, []).append(line.rstrip())

    def heading(self, container: Item, key: str | None = None, depth: int = 0) -> None:
        key = _section_of(container) or key or "findings"
        key_images = container.is_("121180") or container.is_("55113-5")
        title = container.name.meaning if container.name else ""
        if depth and title:
            self.add(key, f"{title}:")
        if _continuous(container):
            sources: list[Item] = []
            self.add(key, self._running_text(container, key, sources))
            for source in sources:  # what the running text's items were inferred from, their properties, ...
                self.related(source, key)
            return
        for child in container.children:
            if child.rel in _CONTEXT_RELS:  # the heading's own context (TID 1001 observer, ...): narrative only
                prefix = _RELATED_PREFIX.get(child.rel, "")
                self.content(child, key, labelled=True, prefix=prefix, finding=False, depth=depth + 1)
                continue
            if child.vtype == "CONTAINER":
                self.heading(child, key, depth + 1)
            elif child.vtype == "IMAGE" and (child.rel == "CONTAINS" or key_images):
                self.key_image(child, key)
                self.related(child, key)
            else:
                self.content(child, key, labelled=False)

    def _running_text(self, container: Item, key: str, sources: list[Item]) -> str:
        """The words of a CONTINUOUS container; items with children of their own are added to ``sources`` (their
        related items are lines after the running text, which they would break)."""
        words: list[str] = []
        for child in container.children:
            if child.vtype != "CONTAINER" and child.children:
                sources.append(child)
            if child.vtype == "TEXT" and child.text:
                words.append(child.text.strip())
            elif child.vtype == "PNAME" and child.text:
                p = person_from_pn(child.text)
                if p is not None:
                    words.append(" ".join([*p.prefix, *p.given, p.family or "", *p.suffix]).strip())
            elif child.vtype == "CODE" and child.code:
                words.append(child.code.meaning or child.code.value)
                self._finding(child, key)
            elif child.vtype == "NUM" and child.num and child.num.value is not None:
                words.append(format_num(child))
                self._finding(child, key)
            elif child.vtype in ("DATE", "DATETIME", "TIME") and child.text:
                words.append(narrative_when(child.vtype, child.text))
            elif child.vtype == "IMAGE":
                self.key_image(child, key)
            elif child.vtype == "CONTAINER":
                words.append(self._running_text(child, key, sources))
        self.found = self.found or bool(words)
        return _join(words)

    def content(
        self, item: Item, key: str, *, labelled: bool, prefix: str = "", finding: bool = True, depth: int = 0
    ) -> None:
        """One content item as a narrative line (``prefix: line`` for a related item), a finding for CODE and
        NUM (unless ``finding`` is False), then its related items (:meth:`related`)."""
        label = item.name.meaning if item.name and item.name.value not in _NARRATIVE_NAMES else ""
        line = ""
        if item.vtype == "TEXT" and item.text and item.text.strip():
            body = item.text.replace("\r\n", "\n").replace("\r", "\n").strip()
            line = f"{label}: {body}" if labelled and label else body
        elif item.vtype == "CODE" and item.code:
            line = f"{label or 'Finding'}: {item.code.meaning or item.code.value}"
            if finding:
                self._finding(item, key)
        elif item.vtype == "NUM" and item.num and item.num.value is not None:
            line = f"{label or 'Measurement'}: {format_num(item)}"
            if finding:
                self._finding(item, key)
        elif item.vtype == "PNAME" and item.text:
            line = f"{label}: {item.text.replace('^', ' ').strip()}" if label else ""
        elif item.vtype in ("DATE", "DATETIME", "TIME") and item.text:
            line = f"{label}: {narrative_when(item.vtype, item.text)}" if label else ""
        elif item.vtype == "CONTAINER":
            self.heading(item, key, 1)
            return
        if line:
            self.found = True
            self.add(key, f"{prefix}: {line}" if prefix else line)
        self.related(item, key, finding=finding, depth=depth)

    def related(self, source: Item, key: str, *, finding: bool = True, depth: int = 0) -> None:
        """The children of a (non-container) content item, each by its relationship type (``_RELATED_PREFIX``):
        values become lines after the source's line; CODE and NUM the source was inferred from, or that are its
        properties, are also findings, while concept modifiers and context are narrative only. References without
        a value of their own (IMAGE, COMPOSITE, WAVEFORM, SCOORD, TCOORD) are not narrative."""
        if depth >= 64:
            return
        for child in source.children:  # a CONTAINER child (not valid below a content item) reads as a sub-heading
            self.content(
                child,
                key,
                labelled=True,
                prefix=_RELATED_PREFIX.get(child.rel, ""),
                finding=finding and child.rel not in _QUALIFIERS,
                depth=depth + 1,
            )

    def _finding(self, item: Item, key: str) -> None:
        if item.name is None:
            return
        self.found = True
        base = self.h.base
        index = len(self.report.findings)
        f = Finding(
            code=concept(item.name, base) or Concept(text="Finding"),
            section=key,
            observation_uid=item.uid,
            key=f"tid2000-{index}",
        )
        if item.vtype == "CODE" and item.code:
            f.value_concept = concept(item.code, base)
        elif item.num is not None and item.num.value is not None:
            unit = item.num.unit
            f.value_quantity = (item.num.value, (unit.meaning or unit.value) if unit else None, ucum(unit))
        f.status = observation_status(self.report.status)
        self.report.findings.append(f)

    def key_image(self, item: Item, key: str) -> None:
        ref = item.ref
        if ref is None or not uid_ok(ref.sop_instance) or not uid_ok(ref.sop_class):
            return
        study_uid, series_uid = self._evidence.get(ref.sop_instance, (self.h.study_uid, None))
        if not uid_ok(study_uid) or study_uid not in {s.uid for s in self.report.studies}:
            return
        self.found = True
        self.report.extras.append(
            ExtraResource(
                resource=_key_image(self.h, self.report, ref, study_uid, series_uid, item),
                section=key if key in ("findings", "impression") else "findings",
                dr_extension="impression" if key == "impression" else "finding",
            )
        )

    def flush(self) -> None:
        for key in list(self.sections):
            if not any(line.strip() for line in self.sections[key]):
                del self.sections[key]


def _continuous(container: Item) -> bool:
    """Continuity Of Content CONTINUOUS: the TEXT items and inline values read as one running text."""
    return container.continuous and any(c.vtype == "TEXT" for c in container.children)


def _join(words: list[str]) -> str:
    out = ""
    for w in words:
        if not w:
            continue
        out = w if not out else out + ("" if w[0] in ".,;:!?)" or out.endswith(("\n", "(")) else " ") + w
    return out


_TM = re.compile(r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(\.\d{1,6})?$")  # PS3.5 TM (and the ACR-NEMA hh:mm:ss)
_DT = re.compile(r"^(\d{4}(?:\d{2}(?:\d{2})?)?)(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")


def narrative_when(vtype: str, value: str) -> str:
    """The narrative text of a DATE, TIME or DATETIME content item (PS3.5 DA, TM, DT), all three alike:
    ISO 8601 with the precision the item has (``2026-11-30``, ``09:30``, ``09:30:00.5``,
    ``2026-11-30 09:30:00``), and an offset only when the DT value carries one (``2026-11-30 09:30 +01:00``).
    No time zone is assumed for narrative: a value without an offset is shown without one. A value that is
    not valid DA/TM/DT is shown as sent."""
    raw = value.strip()
    if vtype == "DATE":
        return dicom_date(raw) or raw
    if vtype == "TIME":
        return _time(raw) or raw
    m = _DT.match(raw)
    date = dicom_date(m.group(1)) if m else None
    if m is None or date is None:
        return raw
    parts = [date]
    if m.group(2):
        clock = _time(m.group(2))
        if clock is None or len(date) != 10:
            return raw
        parts.append(clock)
    if m.group(3):
        off = m.group(3)
        if int(off[1:3]) > 14 or int(off[3:]) > 59:
            return raw
        parts.append(f"{off[:3]}:{off[3:]}")
    return " ".join(parts)


def _time(raw: str) -> str | None:
    m = _TM.match(raw)
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    if int(hh) > 23 or int(mm or 0) > 59 or int(ss or 0) > 60 or (ss is None and frac):
        return None
    return ":".join(p for p in (hh, mm, ss) if p) + (frac or "")


def format_num(item: Item) -> str:
    num = item.num
    if num is None or num.value is None:
        return ""
    unit = num.unit
    shown = ""
    if unit is not None and unit.value != "1":
        shown = unit.meaning if unit.value.startswith("{") else unit.value
    return f"{num.value} {shown}".strip()


def _evidence_index(h: Header) -> dict[str, tuple[str, str | None]]:
    return h.evidence


def _key_image(
    h: Header, report: Report, ref: Any, study_uid: str, series_uid: str | None, item: Item
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "ImagingSelection",
        "id": uuid_for("ImagingSelection", h.sop_uid, "key-image", ref.sop_instance, ",".join(map(str, ref.frames))),
        "meta": {"profile": [IM + "ImagingSelectionKeyImageEuImaging"]},
        "status": "available",
        "subject": {"reference": "@patient"},
    }
    based_on = accession_ref(report)
    if based_on:
        res["basedOn"] = based_on
    res["code"] = {"coding": [{"system": fhir.DCM, "code": "121180", "display": "Key Images"}]}
    if item.name is not None and item.name.value not in ("121180",):
        res["code"]["coding"].append(fhir.coding(coding(item.name, h.base)))
    res["studyUid"] = study_uid
    res["derivedFrom"] = [study_ref(study_uid)]
    if series_uid:
        res["seriesUid"] = series_uid
    instance: dict[str, Any] = {
        "uid": ref.sop_instance,
        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{ref.sop_class}"},
    }
    if ref.frames:
        instance["subset"] = [str(f) for f in ref.frames]
    res["instance"] = [instance]
    return res
