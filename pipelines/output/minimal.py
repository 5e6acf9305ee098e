"""The minimal-metadata format (eu-imaging.md §2.2, §3.3): a ``collection`` Bundle with a
DiagnosticReportEuImagingMinimalMetadata, for reports without a Study Instance UID or whose only content
is an attached document. ``basedOn`` and ``study`` carry identifiers only; nothing is invented."""

from __future__ import annotations

from typing import Any

from pipelines.common import fhir
from pipelines.common import primitives as prim
from pipelines.common.ids import urn, uuid_for
from pipelines.common.model import Report
from pipelines.output import profiles
from pipelines.output.document import bundle_id
from pipelines.output.parts import build_parts, dr_header, dr_narrative
from pipelines.output.timezone import mark_resource

__all__ = ["shape_minimal"]


def shape_minimal(report: Report) -> dict[str, Any]:
    parts = build_parts(report, with_studies=False)
    dr_id = uuid_for("DiagnosticReport", report.identifier.system, report.identifier.value)
    dr: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": dr_id,
        "meta": profiles.profile_meta(profiles.DIAGNOSTIC_REPORT_MINIMAL),
    }
    dr_header(report, parts, dr)
    if parts.observations:
        dr["result"] = [{"reference": u} for u, _ in parts.observations]
    if report.studies:
        dr["study"] = [{"identifier": fhir.study_uid_identifier(s.uid)} for s in report.studies[:1]]
    dr_narrative(report, parts, dr)
    entries = [(urn(dr_id), dr), (parts.patient_url, parts.patient)]
    entries += parts.observations + parts.people + parts.orgs
    bid = bundle_id(report)
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": bid,
        "meta": profiles.profile_meta(profiles.BUNDLE_MINIMAL),
        "identifier": {"system": "urn:ietf:rfc:3986", "value": urn(bid)},
        "type": "collection",
    }
    timestamp = prim.instant(report.issued, report.timezone) if report.issued else None
    if timestamp:
        out["timestamp"] = timestamp
    if report.timezone_assumed:  # no source offset, none configured (eu-imaging.md §2.5)
        for _, res in entries:
            mark_resource(res)
    out["entry"] = [{"fullUrl": url, "resource": res} for url, res in entries]
    return out
