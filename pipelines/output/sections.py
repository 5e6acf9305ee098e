"""Composition sections (EU CompositionEuImaging slices; invariants eu-imaging-composition-1/-2, cmp-1)."""

from __future__ import annotations

from typing import Any

from pipelines.common import fhir
from pipelines.common import primitives as prim
from pipelines.common.model import Report
from pipelines.common.sections import MANDATORY, SECTIONS, entry_allowed
from pipelines.output.parts import Parts

__all__ = ["build_sections", "place_entries"]

_ORDER = (
    "imagingstudy", "order", "history", "procedure", "comparison", "findings", "impression", "conclusion",
    "recommendation", "communication", "addendum", "report",
)  # fmt: skip

_EMPTY_REASON = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "unavailable",
         "display": "Unavailable"}
    ]
}  # fmt: skip


def place_entries(parts: Parts) -> dict[str, list[str]]:
    """Section entries, each in a section whose EU slices take its resource type (``ENTRY_TYPES`` in
    :mod:`pipelines.common.sections`). An entry a section cannot hold moves to the findings section when
    findings takes it (an Observation found under a recommendation heading: the recommendation section takes
    only CarePlan/ServiceRequest), else to the open ``report`` section; its words stay in the narrative of
    the section it was written under."""
    index = dict(parts.studies + parts.orders + parts.observations + parts.others)
    placed: dict[str, list[str]] = {}
    for key, urls in parts.section_entries.items():
        for url in urls:
            res = index.get(url)
            target = key
            if res is not None and not entry_allowed(key, res):
                target = "findings" if entry_allowed("findings", res) else "report"
            bucket = placed.setdefault(target, [])
            if url not in bucket:
                bucket.append(url)
    return placed


def build_sections(report: Report, parts: Parts) -> list[dict[str, Any]]:
    texts: dict[str, list[str]] = {}
    for s in report.sections:
        clean = prim.string(s.text)
        if clean.strip():
            texts.setdefault(s.key, []).append(clean)
    placed = place_entries(parts)
    out = []
    for key in _ORDER:
        text = "\n\n".join(texts.get(key, []))
        entries = placed.get(key, [])
        if not text and not entries and key not in MANDATORY:
            continue
        out.append(_section(key, text, entries, parts))
    return out


def _section(key: str, text: str, entries: list[str], parts: Parts) -> dict[str, Any]:
    code, display, title = SECTIONS[key]
    sec: dict[str, Any] = {}
    if text:
        sec["extension"] = [{"url": "http://hl7.org/fhir/StructureDefinition/note", "valueAnnotation": {"text": text}}]
    sec["title"] = title
    sec["code"] = {"coding": [{"system": fhir.LOINC, "code": code, "display": display}]}
    rendered = text or _render_entries(key, entries, parts)
    sec["text"] = fhir.narrative(rendered or "No information available in the source report.")
    if entries:
        sec["entry"] = [{"reference": u} for u in entries]
    elif not text:
        sec["emptyReason"] = _EMPTY_REASON
    return sec


def _render_entries(key: str, entries: list[str], parts: Parts) -> str:
    index = dict(parts.studies + parts.orders + parts.observations + parts.others)
    lines = []
    for url in entries:
        res = index.get(url)
        if res is None:
            continue
        rtype = res["resourceType"]
        if rtype == "ImagingStudy":
            uid = res["identifier"][0]["value"].removeprefix("urn:oid:")
            mods = ", ".join(m["coding"][0]["code"] for m in res.get("modality", []))
            lines.append(f"Study Instance UID {uid}" + (f" ({mods})" if mods else ""))
        elif rtype == "ServiceRequest":
            lines.append(f"Accession number {res['identifier'][0]['value']}")
        elif rtype == "Observation":
            lines.append(_render_observation(res))
        else:
            lines.append(rtype)
    return "\n".join(lines)


def _render_observation(res: dict[str, Any]) -> str:
    code = res.get("code", {})
    name = code.get("text") or next((c.get("display") or c.get("code") for c in code.get("coding", [])), "Observation")
    if "valueString" in res:
        value = res["valueString"]
    elif "valueQuantity" in res:
        q = res["valueQuantity"]
        value = f"{q.get('value')} {q.get('unit') or q.get('code') or ''}".strip()
    elif "valueCodeableConcept" in res:
        v = res["valueCodeableConcept"]
        value = v.get("text") or next((c.get("display") or c.get("code") for c in v.get("coding", [])), "")
    else:
        value = ""
    return f"{name}: {value}" if value else str(name)
