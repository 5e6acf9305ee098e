"""Composition sections (EU CompositionEuImaging slices; invariants eu-imaging-composition-1/-2, cmp-1)."""

from __future__ import annotations

from typing import Any

from pipelines.common import fhir
from pipelines.common import primitives as prim
from pipelines.common.model import Report
from pipelines.common.sections import MANDATORY, SECTIONS
from pipelines.output.parts import Parts

__all__ = ["build_sections"]

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


def build_sections(report: Report, parts: Parts) -> list[dict[str, Any]]:
    """Sections in EU order. Texts are the clean section texts of :class:`Parts`; entries were placed in a
    section whose slices take their resource type when they were built (``entry_section``)."""
    texts: dict[str, list[str]] = {}
    for key, text in parts.texts:
        texts.setdefault(key, []).append(text)
    out = []
    for key in _ORDER:
        text = "\n\n".join(texts.get(key, []))
        entries = parts.section_entries.get(key, [])
        if not text and not entries and key not in MANDATORY:
            continue
        out.append(_section(key, text, entries, parts))
    return out


_NO_TEXT = "No information available in the source report."


def _section(key: str, text: str, entries: list[str], parts: Parts) -> dict[str, Any]:
    code, display, title = SECTIONS[key]
    sec: dict[str, Any] = {}
    if text:
        sec["extension"] = [{"url": "http://hl7.org/fhir/StructureDefinition/note", "valueAnnotation": {"text": text}}]
    sec["title"] = title
    sec["code"] = {"coding": [{"system": fhir.LOINC, "code": code, "display": display}]}
    if text:
        # "Section text SHALL render all entries" (CompositionEuImaging.section.text): structured results the
        # dictation does not already say (a measurement, a coded or dated result) follow it.
        extra = _unsaid(text, entries, parts)
        rendered = f"{text}\n\n{prim.string(extra)}" if extra else text
    else:
        rendered = prim.string(_render_entries(key, entries, parts))
    sec["text"] = {"status": "generated", "div": prim.narrative_div(rendered or _NO_TEXT, clean=True)}
    if entries:
        sec["entry"] = [{"reference": u} for u in entries]
    elif not text:
        sec["emptyReason"] = _EMPTY_REASON
    return sec


def _render_entries(key: str, entries: list[str], parts: Parts) -> str:
    if not entries:
        return ""
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
            lines.append(_render_observation(res, parts.displays.get(url)))
        else:
            lines.append(rtype)
    return "\n".join(lines)


def _unsaid(text: str, entries: list[str], parts: Parts) -> str:
    """Lines for the Observation entries of a dictated section whose value the text does not contain."""
    wanted = set(entries)
    lines = []
    for url, res in parts.observations + parts.others:
        if url not in wanted or res.get("resourceType") != "Observation":
            continue
        if res.get("valueString") == text:  # the anchor finding: the dictation itself
            continue
        display = parts.displays.get(url)
        value = display or _observation_value(res)
        if value and value not in text:
            lines.append(_render_observation(res, display))
    return "\n".join(lines)


def _render_observation(res: dict[str, Any], display: str | None = None) -> str:
    """``display``: the value as narrative shows it when the source said it otherwise than the FHIR value
    (a date/time as sent: no padded seconds, no assumed zone)."""
    code = res.get("code", {})
    name = code.get("text") or next((c.get("display") or c.get("code") for c in code.get("coding", [])), "Observation")
    value = display or _observation_value(res)
    return f"{name}: {value}" if value else str(name)


def _observation_value(res: dict[str, Any]) -> str:
    if "valueString" in res:
        value = res["valueString"]
    elif "valueQuantity" in res:
        q = res["valueQuantity"]
        value = f"{q.get('comparator', '')}{q.get('value')} {q.get('unit') or q.get('code') or ''}".strip()
    elif "valueDateTime" in res or "valueTime" in res:
        value = res.get("valueDateTime") or res["valueTime"]
    elif "valueCodeableConcept" in res:
        v = res["valueCodeableConcept"]
        value = v.get("text") or next((c.get("display") or c.get("code") for c in v.get("coding", [])), "")
    else:
        value = ""
    return str(value)
