"""Unknown time zones (eu-imaging.md §2.5): when a source time carried no offset and the sender profile
does not configure one, the value keeps the default offset and every ``dateTime`` gets the
``uncertainPeriod`` extension spanning ±12 h, as the IG requires. ``instant`` elements cannot carry it."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

__all__ = ["MARKED_TYPES", "mark_resource", "mark_uncertain"]

URL = "http://hl7.org/fhir/StructureDefinition/uncertainPeriod"

# dateTime elements the shapers fill from source times, per resource type.
_ELEMENTS = {
    "Composition": ("date",),
    "DiagnosticReport": ("effectiveDateTime",),
    "Observation": ("effectiveDateTime",),
    "ImagingStudy": ("started",),
    "ServiceRequest": ("authoredOn",),
}
#: Resource types :func:`mark_resource` may change (the others are left as they are).
MARKED_TYPES = frozenset(_ELEMENTS)


def mark_uncertain(bundle: dict[str, Any]) -> None:
    """Mark every source ``dateTime`` of a built Bundle (the shapers mark theirs while building:
    :func:`mark_resource`; this walk is for Bundles built elsewhere)."""
    for entry in bundle.get("entry", []):
        mark_resource(entry["resource"])


def mark_resource(res: dict[str, Any]) -> None:
    """Add the ``uncertainPeriod`` extension to the source ``dateTime`` elements of one finished resource
    (the ``_<element>`` key goes last, after every element). Idempotent."""
    rtype = res.get("resourceType", "")
    for name in _ELEMENTS.get(rtype, ()):
        _mark(res, name)
    if rtype == "DiagnosticReport" and isinstance(res.get("effectivePeriod"), dict):
        for name in ("start", "end"):
            _mark(res["effectivePeriod"], name)
    if rtype == "Composition":
        for attester in res.get("attester", []):
            _mark(attester, "time")


def _mark(holder: dict[str, Any], name: str) -> None:
    value = holder.get(name)
    if not isinstance(value, str) or "T" not in value:
        return
    span = _span(value)
    if span is not None:
        period = {"start": span[0], "end": span[1]}
        holder[f"_{name}"] = {"extension": [{"url": URL, "valuePeriod": period}]}


@functools.lru_cache(maxsize=4096)
def _span(value: str) -> tuple[str, str] | None:
    """(start, end) of the ±12 h period around a dateTime; cached (the same times recur in one Bundle)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment - timedelta(hours=12)).isoformat(), (moment + timedelta(hours=12)).isoformat()
