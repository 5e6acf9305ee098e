"""Output shapers: pure functions from the neutral report model to FHIR Bundles, and the serializer.

The deployment models (``document``, ``rest``, and those other modules register) are listed in
:mod:`pipelines.output.models`; :func:`shape` dispatches on the model name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from pipelines.common.model import Report

__all__ = ["serialize", "shape", "shape_document_model", "shape_harmonized_model", "shape_imr_model"]


def shape_document_model(report: Report) -> tuple[dict[str, Any], str]:
    """The ``document`` model: (Bundle, kind) with kind "document" or "minimal"."""
    # Both shapers mark uncertain dateTimes (report.timezone_assumed) while they build the entries.
    if wants_minimal(report):
        return shape_minimal(report), "minimal"
    return shape_document(report), "document"


def shape_harmonized_model(
    report: Report, options: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The ``harmonized`` model (approach 3): a transaction Bundle, kind "harmonized". ``options``:
    ``mapping.models.harmonized`` (``patient_update``)."""
    from pipelines.output.harmonized import HarmonizedOptions, shape_harmonized

    return shape_harmonized(report, HarmonizedOptions(**dict(options or {}))), "harmonized"


def shape_imr_model(report: Report, options: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The ``imr`` model (IHE IMR Report Creator, RAD-141): a transaction Bundle, kind "imr". ``options``:
    ``mapping.models.imr`` (``wado_rs`` per site, ``pdf``)."""
    from pipelines.output.imr import ImrOptions, shape_imr

    opts = dict(options or {})
    return shape_imr(report, ImrOptions(wado_rs=opts.get("wado_rs", {}), pdf=bool(opts.get("pdf", False)))), "imr"


def shape(
    report: Report, model: str = "document", options: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """Return (Bundle, kind) for a report in the given output model (ValueError for an unknown model);
    ``options`` are the model's settings (:meth:`pipelines.context.MappingContext.model_options`)."""
    if model == "document":
        return shape_document_model(report)
    from pipelines.output.models import shaper_for

    shaper = shaper_for(model)
    return shaper(report, options) if options else shaper(report)


#: A float that orjson may spell differently from ``json.dumps`` (``repr``): exponent notation (``1e-07`` vs
#: ``1e-7``, ``1e+16`` vs ``1e16``) or a value below 1e-4 (``2.5e-05`` vs ``0.000025``). The patterns start at
#: the literal ``e`` (the regex engine's fast scan) and may also match text inside strings (``"type 2e5"``);
#: that only costs the slower path.
_EXPONENT = re.compile(rb"e[-+]?\d+[,\]}]")
_SMALL = b"0.0000"
#: Does this orjson spell large floats (exponent 16 and up) as ``json.dumps`` does (``1e+16``)? Then only
#: negative exponents can differ, and they always hold ``e-``: a pattern with that two-byte literal prefix
#: scans a Bundle about 3x faster than :data:`_EXPONENT`, which stops at every ``e`` (uuids, words: ~700 in a
#: document Bundle). Probed once at import, so another orjson version falls back to the full scan.
_LARGE = (1e16, -1.5e300, 1.2345678901234568e17, 1e22, 9.999999999999999e22)
_SAME_LARGE = all(orjson.dumps(v) == json.dumps(v).encode() for v in _LARGE)
_DIFFERENT = re.compile(rb"e-\d+[,\]}]") if _SAME_LARGE else _EXPONENT


def serialize(resource: dict[str, Any]) -> bytes:
    """One canonical serialization (insertion order, compact, UTF-8): same input, byte-identical output.

    The bytes are those of ``json.dumps(resource, ensure_ascii=False, separators=(",", ":"))``, produced by
    orjson (about 10x faster); when a float could be spelled differently, or orjson refuses a value (an
    integer beyond 64 bits), ``json.dumps`` writes it instead."""
    try:
        out = orjson.dumps(resource)
    except orjson.JSONEncodeError:
        out = b""
    if out and _SMALL not in out and _DIFFERENT.search(out) is None:
        return out
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# Imported last (they import this package's submodules): bound once here rather than on every call of the
# hot path (an import statement in a function costs a module look-up per call).
from pipelines.output.document import shape_document, wants_minimal  # noqa: E402
from pipelines.output.minimal import shape_minimal  # noqa: E402
