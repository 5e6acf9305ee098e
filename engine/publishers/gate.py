"""The outgoing validation gate (``sinks.fhir.validate: true``; off by default, on in the tests).

Every resource a publish unit carries (transaction entries, and the entries of a document Bundle inside it) is

1. parsed with **fhir.resources** (R5 pydantic models): structure, cardinalities, datatypes and primitive formats
   of FHIR R5 core. A well-kept library, already the project's strict-check dependency (``pip install
   .[strict]``); the gate is a :class:`engine.errors.ConfigError` at start-up when it is not installed;
2. checked against the **mandatory elements of the profile it names in ``meta.profile``** (the table below: the
   top-level ``min >= 1`` elements of each profile's snapshot in ``hl7.fhir.eu.imaging-r5`` 1.0.0-ballot and
   ``hl7.fhir.eu.base-r5`` 2.0.0-ballot, extracted from the packages' snapshots when this was written; the
   packages are not read at run time) plus the few IG rules a publisher can break
   on its own: the fixed codes of DocumentReferenceImagingReport, a document's Composition first, one
   Composition/DiagnosticReport/Patient and at least one ImagingStudy per BundleReportEuImaging.

Why not the official validator or ``profcheck``: the validator is a JVM process (~0.4 s per Bundle), too slow for a
per-message gate, and profcheck is a shared test tool, not a library we may ship. The gate is a net for what must
never reach a server; conformance in depth is proven by the official validator in the tests.

A failure raises :class:`engine.errors.PermanentError` naming the resource type, id and the first problems
(element paths and pydantic error types only, never values), so the envelope goes to the dead letters.
"""

from __future__ import annotations

from typing import Any

from engine.errors import ConfigError, PermanentError

__all__ = ["MANDATORY", "check_unit", "require_library"]

IM = "http://hl7.eu/fhir/imaging-r5/StructureDefinition/"
EUB = "http://hl7.eu/fhir/base-r5/StructureDefinition/"

#: profile -> top-level elements with min >= 1 (from the package snapshots, see the module docstring)
MANDATORY: dict[str, tuple[str, ...]] = {
    IM + "BundleReportEuImaging": ("entry", "identifier", "type", "timestamp"),
    IM + "BundleReportMinimalMetadataEuImaging": ("entry", "type"),
    IM + "CompositionEuImaging": ("author", "category", "date", "identifier", "section", "status", "subject", "title",
                                  "type"),
    IM + "DiagnosticReportEuImaging": ("category", "code", "composition", "identifier", "result", "status", "subject"),
    IM + "DiagnosticReportEuImagingMinimalMetadata": ("category", "code", "identifier", "status", "subject"),
    IM + "ImagingStudyEuImaging": ("identifier", "status", "subject"),
    IM + "ServiceRequestOrderEuImaging": ("category", "intent", "status", "subject"),
    IM + "ObservationFindingEuImaging": ("code", "status"),
    IM + "ObservationRadiationDoseEuImaging": ("code", "derivedFrom", "status", "subject", "value[x]"),
    IM + "ImagingSelectionEuImaging": ("code", "derivedFrom", "status"),
    IM + "ImagingSelectionKeyImageEuImaging": ("code", "derivedFrom", "status"),
    IM + "SrInstanceImagingSelectionEuImaging": ("code", "derivedFrom", "identifier", "instance", "seriesUid",
                                                 "status", "studyUid"),
    IM + "DeviceEuImaging": ("category", "status"),
    IM + "DocumentReferenceImagingReport": ("category", "content", "date", "status", "subject", "type"),
    EUB + "patient-eu-core": ("birthDate", "name"),
    EUB + "organization-eu-core": ("name",),
    EUB + "practitioner-eu-core": ("name",),
}
_MEDICAL_IMAGING = "Medical-Imaging"
_LOINC_REPORT = "85430-7"


def require_library() -> None:
    try:
        import fhir.resources  # noqa: F401
    except ImportError as exc:
        raise ConfigError("sinks.fhir.validate needs fhir.resources (pip install 'imaging-report-engine[strict]')") \
            from exc


def _present(resource: dict[str, Any], element: str) -> bool:
    if element.endswith("[x]"):
        stem = element[:-3]
        return any(k.startswith(stem) and k[len(stem):][:1].isupper() and resource[k] not in (None, [], {})
                   for k in resource)
    # a primitive may be absent with an extension instead (data-absent-reason on ``_birthDate``)
    return resource.get(element) not in (None, [], {}, "") or bool(resource.get(f"_{element}"))


def _codes(concepts: Any) -> set[str]:
    items = concepts if isinstance(concepts, list) else [concepts]
    return {str(c.get("code")) for cc in items if isinstance(cc, dict) for c in cc.get("coding", []) if c}


def _profile_problems(resource: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for profile in resource.get("meta", {}).get("profile", []):
        name = profile.rsplit("/", 1)[-1]
        problems += [f"{element} missing ({name})" for element in MANDATORY.get(profile, ())
                     if not _present(resource, element)]
        if profile == IM + "DocumentReferenceImagingReport":
            if _LOINC_REPORT not in _codes(resource.get("type")):
                problems.append("type lacks LOINC 85430-7 (DocumentReferenceImagingReport)")
            if _MEDICAL_IMAGING not in _codes(resource.get("category")):
                problems.append("category lacks Medical-Imaging (DocumentReferenceImagingReport)")
            if not all(c.get("profile") for c in resource.get("content", [])):
                problems.append("content.profile missing (DocumentReferenceImagingReport)")
        if profile == IM + "BundleReportEuImaging":
            types = [e.get("resource", {}).get("resourceType") for e in resource.get("entry", [])]
            if not types or types[0] != "Composition":
                problems.append("the Composition is not the first entry (bdl-11)")
            for rtype in ("Composition", "DiagnosticReport", "Patient"):
                if types.count(rtype) != 1:
                    problems.append(f"{types.count(rtype)} {rtype} entries, expected 1 (BundleReportEuImaging)")
            if "ImagingStudy" not in types:
                problems.append("no ImagingStudy entry (BundleReportEuImaging)")
    return problems


def _structure_problems(resource: dict[str, Any]) -> list[str]:
    from fhir.resources import get_fhir_model_class
    from pydantic import ValidationError

    try:
        model = get_fhir_model_class(str(resource.get("resourceType")))
    except KeyError:
        return [f"unknown resource type {str(resource.get('resourceType'))[:40]!r}"]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in err['loc'])}: {err['type']}" for err in exc.errors()[:3]]
    return []


def _walk(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The resource and, for a Bundle, every entry resource (recursively)."""
    found = [resource]
    if resource.get("resourceType") == "Bundle":
        for e in resource.get("entry", []):
            if isinstance(e.get("resource"), dict):
                found += _walk(e["resource"])
    return found


def _fail(resource: dict[str, Any], problems: list[str]) -> None:
    if problems:
        what = f"{resource.get('resourceType')}/{str(resource.get('id', '?'))[:64]}"
        raise PermanentError(f"outgoing validation: {what}: {'; '.join(problems[:4])}"[:300])


def check_unit(unit: dict[str, Any]) -> None:
    """Raise PermanentError when a resource of ``unit`` (a transaction/batch Bundle or one resource) fails.
    Structure is checked once per top-level resource (a Bundle's model covers its entries), profiles everywhere."""
    if unit.get("resourceType") == "Bundle" and unit.get("type") in ("transaction", "batch"):
        _fail(unit, _structure_problems({k: v for k, v in unit.items() if k != "entry"}))
        tops = [e["resource"] for e in unit.get("entry", []) if isinstance(e.get("resource"), dict)]
    else:
        tops = [unit]
    for top in tops:
        for resource in _walk(top):
            _fail(resource, _profile_problems(resource))
        _fail(top, _structure_problems(top))
