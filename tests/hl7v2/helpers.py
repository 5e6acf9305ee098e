"""Helpers for reading converted Bundles in tests."""

from __future__ import annotations

import json
from typing import Any

from engine.convert import Conversion


def bundles(result: Conversion) -> list[dict[str, Any]]:
    return [json.loads(o.body) for o in result.outputs]


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def one(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = resources(bundle, rtype)
    assert len(found) == 1, f"expected one {rtype}, found {len(found)}"
    return found[0]


def section(bundle: dict[str, Any], loinc: str) -> dict[str, Any] | None:
    comp = one(bundle, "Composition")
    for sec in comp["section"]:
        if sec["code"]["coding"][0]["code"] == loinc:
            return sec
    return None


def section_note(bundle: dict[str, Any], loinc: str) -> str:
    sec = section(bundle, loinc)
    assert sec is not None, f"no section {loinc}"
    return str(sec["extension"][0]["valueAnnotation"]["text"])
