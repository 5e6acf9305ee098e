"""DocumentReferenceImagingReport for a document Bundle, and the approach-1 publish transaction (eu-imaging.md §1.4).

:func:`document_reference` describes one report *version* (one document Bundle):

* ``identifier``: the Bundle identifier (``use=official``), the report identifier shared by every version of the
  report (``use=usual``: the publisher finds earlier versions with it, eu-imaging §2.5/§2.6), every accession
  (AccessionNumberIdentifier, ``use=secondary``) and every Study Instance UID (``urn:dicom:uid`` /
  ``urn:oid:``, ``use=secondary``), so ``DocumentReference?identifier=<accession or Study UID>`` finds the report
  (IG report<->manifest lookups, §1.5);
* ``status`` ``current`` (the publisher turns an earlier version ``superseded`` and links the new one with
  ``relatesTo`` ``replaces``; that needs the server's state, so it is not done here), ``docStatus`` from the
  Composition (or DiagnosticReport) status;
* ``type`` LOINC 85430-7 plus the report's own code, ``category`` ``Medical-Imaging``, ``modality`` from the
  ImagingStudy, ``date`` = ``Bundle.timestamp``, else ``DiagnosticReport.issued`` (an instant, as R5
  ``DocumentReference.date`` requires; neither: :class:`~pipelines.errors.MappingError`);
* ``content.attachment``: ``application/fhir+json``, ``url`` ``Bundle/<id>`` (the Bundle is stored beside it),
  ``size`` and SHA-1 ``hash`` of the serialized Bundle, ``content.profile`` = the Bundle's profile.

``subject`` is given by the caller: a logical reference by the patient's first identifier in approach 1 (the
document server holds no Patient of ours; MHD allows that; a patient without any identifier is written as its own
``PUT Patient/<id>`` in the same transaction and referenced literally), a reference to the transaction's own
Patient copy in approach 2. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from pipelines.common.ids import uuid_for
from pipelines.errors import MappingError
from pipelines.output import profiles

__all__ = [
    "DOCREF_PROFILE",
    "docref_id",
    "document_reference",
    "document_transaction",
    "entry",
    "logical_subject",
    "report_identifier",
]

DOCREF_PROFILE = profiles.IM + "DocumentReferenceImagingReport"
LOINC_REPORT = {"system": "http://loinc.org", "code": "85430-7", "display": "Diagnostic imaging report"}
MEDICAL_IMAGING = {
    "system": "http://hl7.eu/fhir/eu-health-data-api/CodeSystem/eehrxf-document-priority-category-cs",
    "code": "Medical-Imaging",
}
_DR_TO_DOC_STATUS = {"modified": "amended"}  # eu-imaging §2.6: DiagnosticReport modified ~ amended
_DOC_STATUS = {
    "registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled",
    "entered-in-error", "deprecated", "unknown",
}


def docref_id(bundle_id: str) -> str:
    """One DocumentReference per document version (Bundle)."""
    return uuid_for("DocumentReference", bundle_id)


def entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    """A transaction entry that PUTs ``resource`` at its own (deterministic) id: a resend is an identical update."""
    rtype, rid = resource["resourceType"], resource["id"]
    return {
        "fullUrl": full_url or f"urn:uuid:{rid}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
    }


def _resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("resource", {}).get("resourceType") == rtype]


def report_identifier(bundle: dict[str, Any]) -> dict[str, Any] | None:
    """The identifier every version of the report shares (DiagnosticReport.identifier[0])."""
    for dr in _resources(bundle, "DiagnosticReport"):
        for ident in dr.get("identifier", []):
            if ident.get("system") and ident.get("value"):
                return {"system": ident["system"], "value": ident["value"]}
    return None


def logical_subject(bundle: dict[str, Any]) -> dict[str, Any]:
    """``{type: Patient, identifier}`` from the document's Patient (MappingError when it has no identifier)."""
    for patient in _resources(bundle, "Patient"):
        for ident in patient.get("identifier", []):
            if ident.get("system") and ident.get("value"):
                kept = {k: ident[k] for k in ("type", "system", "value") if k in ident}
                return {"type": "Patient", "identifier": kept}
    raise MappingError("DocumentReference.subject: the report's patient has no identifier with system and value")


def _secondary(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def add(ident: dict[str, Any] | None) -> None:
        if not ident or not ident.get("system") or not ident.get("value"):
            return
        item: dict[str, Any] = {"use": "secondary"}
        item.update({k: ident[k] for k in ("type", "system", "value") if k in ident})
        if all((i["system"], i["value"]) != (item["system"], item["value"]) for i in found):
            found.append(item)

    for sr in _resources(bundle, "ServiceRequest"):
        for ident in sr.get("identifier", []):
            add(ident)
    for study in _resources(bundle, "ImagingStudy"):
        for ident in study.get("identifier", []):
            add(ident)
    for dr in _resources(bundle, "DiagnosticReport"):  # minimal-metadata: identifier-only basedOn / study
        for ref in dr.get("basedOn", []) + dr.get("study", []):
            add(ref.get("identifier"))
    return found


def _doc_status(bundle: dict[str, Any]) -> str:
    comps = _resources(bundle, "Composition")
    status = comps[0].get("status") if comps else None
    if status is None:
        drs = _resources(bundle, "DiagnosticReport")
        status = drs[0].get("status") if drs else None
    status = _DR_TO_DOC_STATUS.get(str(status), str(status))
    return status if status in _DOC_STATUS else "unknown"


def _instant(bundle: dict[str, Any]) -> str:
    """``Bundle.timestamp``, else ``DiagnosticReport.issued`` (both instants); R5 ``DocumentReference.date`` is one."""
    if bundle.get("timestamp"):
        return str(bundle["timestamp"])
    for dr in _resources(bundle, "DiagnosticReport"):
        if dr.get("issued"):
            return str(dr["issued"])
    raise MappingError(
        "DocumentReference.date (an instant) cannot be filled: the report has no issue time with a time of day "
        "(no Bundle.timestamp, no issued; a date-only time is never made midnight)"
    )


def document_reference(bundle: dict[str, Any], body: bytes, subject: dict[str, Any]) -> dict[str, Any]:
    """DocumentReferenceImagingReport for ``bundle`` whose serialized bytes are ``body`` (size and SHA-1 hash)."""
    bundle_id = bundle["id"]
    identifiers: list[dict[str, Any]] = []
    if bundle.get("identifier"):
        identifiers.append({"use": "official", **bundle["identifier"]})
    report = report_identifier(bundle)
    if report is not None:
        identifiers.append({"use": "usual", **report})
    identifiers += _secondary(bundle)

    codings = [dict(LOINC_REPORT)]
    for dr in _resources(bundle, "DiagnosticReport")[:1]:
        codings += [c for c in dr.get("code", {}).get("coding", []) if c.get("code") != LOINC_REPORT["code"]]
    comps = _resources(bundle, "Composition")
    document = bundle.get("type") == "document"

    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": docref_id(bundle_id),
        "meta": profiles.profile_meta(DOCREF_PROFILE),
        "identifier": identifiers,
    }
    if comps and comps[0].get("version"):
        doc["version"] = comps[0]["version"]
    doc["status"] = "current"
    doc["docStatus"] = _doc_status(bundle)
    modalities: list[dict[str, Any]] = []
    for study in _resources(bundle, "ImagingStudy"):
        for m in study.get("modality", []):
            if m not in modalities:
                modalities.append(m)
    if modalities:
        doc["modality"] = modalities
    doc["type"] = {"coding": codings}
    doc["category"] = [{"coding": [dict(MEDICAL_IMAGING)]}]
    doc["subject"] = subject
    doc["date"] = _instant(bundle)
    attachment: dict[str, Any] = {
        "contentType": "application/fhir+json",
        "url": f"Bundle/{bundle_id}",
        "size": str(len(body)),  # integer64 is a JSON string in R5
        "hash": base64.b64encode(hashlib.sha1(body, usedforsecurity=False).digest()).decode("ascii"),
    }
    if comps and comps[0].get("title"):
        attachment["title"] = comps[0]["title"]
    doc["content"] = [{
        "attachment": attachment,
        "profile": [{"valueCanonical": profiles.BUNDLE if document else profiles.BUNDLE_MINIMAL}],
    }]
    return doc


def document_transaction(bundle: dict[str, Any], body: bytes) -> dict[str, Any]:
    """Approach 1 on a FHIR server: one ``transaction`` that PUTs the document Bundle (``Bundle/<id>``) and its
    DocumentReference (``DocumentReference/<uuid5 of the Bundle id>``); both ids are deterministic, so a resend
    is a no-op update. ``id`` of the returned Bundle is the document's id (file name in ``engine map``)."""
    if bundle.get("type") not in ("document", "collection"):
        raise MappingError(f"approach 1 publishes document or collection Bundles, not {bundle.get('type')!r}")
    extra: list[dict[str, Any]] = []
    try:
        subject = logical_subject(bundle)
    except MappingError:  # no usable patient identifier: a literal reference to the document's own Patient
        patients = _resources(bundle, "Patient")
        if not patients:
            raise
        extra.append(entry(patients[0]))
        subject = {"reference": f"urn:uuid:{patients[0]['id']}"}
    doc = document_reference(bundle, body, subject)
    return {
        "resourceType": "Bundle",
        "id": bundle["id"],
        "type": "transaction",
        "entry": [entry(bundle), *extra, entry(doc)],
    }
