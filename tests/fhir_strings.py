"""Every string value inside a FHIR JSON structure (shared by the control-character and text tests)."""

from __future__ import annotations

from typing import Any

__all__ = ["strings"]


def strings(value: Any) -> list[str]:
    """All ``str`` leaves of nested dicts/lists, depth first, in document order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []
