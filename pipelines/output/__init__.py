"""Output shapers: pure functions from the neutral report model to FHIR Bundles, and the serializer."""

from __future__ import annotations

import json
from typing import Any

from pipelines.common.model import Report

__all__ = ["serialize", "shape"]


def shape(report: Report, model: str = "document") -> tuple[dict[str, Any], str]:
    """Return (Bundle, kind) for a report; kind is "document" or "minimal" (document model), "harmonized"
    or "imr" (transaction Bundles: :mod:`pipelines.output.harmonized`, :mod:`pipelines.output.imr`)."""
    from pipelines.output.document import shape_document, wants_minimal
    from pipelines.output.minimal import shape_minimal

    if model == "harmonized":
        from pipelines.output.harmonized import shape_harmonized

        return shape_harmonized(report), "harmonized"
    if model == "imr":
        from pipelines.output.imr import shape_imr

        return shape_imr(report), "imr"
    if model != "document":
        raise ValueError(f"unknown output model {model!r}")
    from pipelines.output.timezone import mark_uncertain

    bundle, kind = (shape_minimal(report), "minimal") if wants_minimal(report) else (shape_document(report), "document")
    if report.timezone_assumed:
        mark_uncertain(bundle)
    return bundle, kind


def serialize(resource: dict[str, Any]) -> bytes:
    """One canonical serialization (insertion order, compact, UTF-8): same input, byte-identical output."""
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
