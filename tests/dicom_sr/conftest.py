"""Fixtures of the DICOM SR tests: every shared SR file converted once per session."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dicom_sr.helpers import SR_FILES, load


@pytest.fixture(scope="session")
def sr_bundles(converter: Any) -> dict[str, list[dict[str, Any]]]:
    """file name -> the Bundles its conversion produced (via the real Converter)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in SR_FILES:
        result = converter.convert(path.read_bytes())
        out[path.name] = [load(o.body) for o in result.outputs]
    return out


@pytest.fixture(scope="session")
def sr_bundle(sr_bundles: dict[str, list[dict[str, Any]]]) -> Any:
    def get(name: str) -> dict[str, Any]:
        found = sr_bundles[name]
        assert len(found) == 1, f"{name}: expected one Bundle, got {len(found)}"
        return found[0]

    return get
