"""Shared data of the DICOM SR tests: the shared sample files and what each one must become."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import TESTDATA

__all__ = ["REJECTED", "SR_DIRS", "SR_FILES", "by_type", "file", "one", "resources"]

SR_DIRS = sorted(p for p in TESTDATA.glob("dicom-sr-*") if p.is_dir())
SR_FILES = sorted(p for d in SR_DIRS for p in d.rglob("*") if p.is_file() and p.suffix == ".dcm")

#: Files that carry no report, with a fragment of the reason they are filtered with (not dead-lettered).
REJECTED = {
    "Tag-0040-A170-VR-CS.dcm": "retired SR trial SOP Class",
    "ESR_non-dose.dcm": "no report content",
    "StructuredReports-IM0.dcm": "OsiriX annotation store",
}


def file(name: str) -> Path:
    return next(p for p in SR_FILES if p.name == name)


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]]


def by_type(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources(bundle) if r["resourceType"] == rtype]


def one(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = by_type(bundle, rtype)
    assert len(found) == 1, f"expected one {rtype}, found {len(found)}"
    return found[0]


def load(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    return doc
