"""Canonical URLs of the profiles every emitted resource names in ``meta.profile``."""

from __future__ import annotations

__all__ = ["EUB", "IM", "profile_meta"]

IM = "http://hl7.eu/fhir/imaging-r5/StructureDefinition/"
EUB = "http://hl7.eu/fhir/base-r5/StructureDefinition/"

BUNDLE = IM + "BundleReportEuImaging"
BUNDLE_MINIMAL = IM + "BundleReportMinimalMetadataEuImaging"
COMPOSITION = IM + "CompositionEuImaging"
DIAGNOSTIC_REPORT = IM + "DiagnosticReportEuImaging"
DIAGNOSTIC_REPORT_MINIMAL = IM + "DiagnosticReportEuImagingMinimalMetadata"
IMAGING_STUDY = IM + "ImagingStudyEuImaging"
SERVICE_REQUEST = IM + "ServiceRequestOrderEuImaging"
FINDING = IM + "ObservationFindingEuImaging"
PATIENT = EUB + "patient-eu-core"
PRACTITIONER = EUB + "practitioner-eu-core"
PRACTITIONER_ROLE = EUB + "practitionerRole-eu-core"
ORGANIZATION = EUB + "organization-eu-core"


def profile_meta(url: str) -> dict[str, list[str]]:
    return {"profile": [url]}
