"""Approach 3, REST access to harmonized resources (eu-imaging.md §1.1, §1.7, §2.6): one FHIR
``transaction`` per report version that merges the report into shared resources on the server.

Input: a :class:`~pipelines.common.model.Report` (or a :class:`~pipelines.common.model.StatusUpdate`);
output: a ``transaction`` Bundle (dict). The resources are exactly those of the EU document
(:mod:`pipelines.output.document`, or the minimal-metadata collection), so the profiles stay the same; only
the request of each entry differs. Inside the transaction every reference is the ``urn:uuid`` fullUrl of the
entry (deterministic uuid5); the server rewrites it to whatever resource the conditional request matched.

Match keys and requests (one row per resource type):

======================  =====================================================  ==================================
resource                key                                                    request
======================  =====================================================  ==================================
Patient                 first identifier (PID-3 / Patient ID + issuer)         ``POST`` + ``ifNoneExist``, or
                                                                               ``PUT Patient?identifier=`` (rules)
Organization            identifier (MSH-4 / Institution)                       ``POST`` + ``ifNoneExist``
Practitioner            first identifier (XCN-1 + assigning authority)         ``POST`` + ``ifNoneExist``
Device                  identifier (Device UID)                                ``POST`` + ``ifNoneExist``
ImagingStudy            ``urn:dicom:uid|urn:oid:<Study Instance UID>``         ``POST`` + ``ifNoneExist``
ServiceRequest          accession (issuer system + value)                      ``POST`` + ``ifNoneExist``
DiagnosticReport,       report identifier (filler order number / SR SOP UID;   ``PUT Type?identifier=`` (a new
Composition             the same for P, F, C, amended)                         version of the same resource)
anything else           deterministic id (uuid5 over business identifiers)     ``PUT Type/<id>``
Provenance              uuid5(target, source document)                         ``PUT Provenance/<id>``
======================  =====================================================  ==================================

Resources without the key (a Patient without identifiers, a Practitioner known by name only) fall back to
``PUT Type/<deterministic id>`` (the ids the document model gives them). ORU and SR (and dose SR) of one
accession therefore end on the same ImagingStudy and ServiceRequest when their Study Instance UID and
issuer-qualified accession agree (configure ``accession_system`` for both senders).

**Merge rules (never overwrite richer data with thinner).** Shared resources are created when absent and
otherwise left as they are (``ifNoneExist``): an ORU cannot wipe the series an SR brought, a dose SR cannot
thin an order. The Patient is the only shared resource a message may *replace*, and only when it is
*complete*: it carries a name (family or text) with a given name, the gender and the full birth date, i.e.
every demographic element the engine maps; then ``PUT Patient?identifier=`` writes it (the latest complete
message wins, e.g. a corrected name). The replacement carries the message's identifiers: identifiers that
only another source put on that Patient are dropped, so where another system owns the Patient (a master
patient index), use ``patient_update="never"``, which never replaces one. Any other message creates the
Patient if absent and leaves an existing one alone. "Latest" is the latest *first delivery*: the FHIR publisher
sends the resend of a version the server already holds with create-if-absent for the Patient and does not send a
version older than the server's at all (``engine.publishers.supersede.harmonized_version``), so replaying old
messages never undoes a later replacement.
A status change (OBX-11 ``U`` or OBR-25 ``X``, ``Report.status_only``) patches the status of the
DiagnosticReport and Composition (JSON Patch, ``PATCH Type?identifier=``) and of the ServiceRequest, so the
earlier text stays; a status-only ORU (:func:`shape_status_update`) patches its ServiceRequest and
ImagingStudy and nothing else, as a ``batch`` whose entries may answer 404 when the server does not hold the
order or study yet (nothing is invented from a status message; the later report creates them). A status
*change* of a report patches in a ``transaction``: a 404 there (a cancel of a report never sent) fails the
message (dead letter with the OperationOutcome).

**Provenance** (eu-imaging.md §1.7): one per derived resource of the version, ``target`` the resource,
``entity.role = source`` with ``what`` the source document by identifier (the EU document Bundle's
``Bundle.identifier`` that the document model publishes, and for DICOM SR the SOP Instance UID);
``agent`` the performing organisation. A resend of the same version puts identical Provenances (no change).

**Addenda** are their own report (eu-imaging.md §2.6): a version with status ``appended`` (OBR-25 ``B``,
"ADDENDUM"; an SR with an addendum) becomes a separate DiagnosticReport/Composition whose identifier is the
original's value plus ``/addendum/<digest of the version>``, with ``Composition.relatesTo`` ``appends`` the
original report identifier and the same ``basedOn`` order; its status is ``final``. The original report
keeps its last version (a document consumer still sees the ``appended`` document in the document model).

Findings of a corrected version that no longer occur stay on the
server (they keep their own history); the DiagnosticReport's ``result`` lists the current ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipelines.common import fhir
from pipelines.common.ids import digest, urn, uuid_for
from pipelines.common.model import Ident, Patient, Report, StatusUpdate
from pipelines.output import transaction as tx

__all__ = ["HarmonizedOptions", "is_complete", "order_statuses", "shape_harmonized", "shape_status_update"]

_CREATE_IF_ABSENT = ("Organization", "Practitioner", "Device", "ImagingStudy", "ServiceRequest")
_UPDATE_BY_REPORT_ID = ("DiagnosticReport", "Composition")


@dataclass(frozen=True, slots=True)
class HarmonizedOptions:
    """``patient_update``: ``"complete"`` (default: a complete message replaces the Patient, see module
    docstring) or ``"never"`` (create if absent only)."""

    patient_update: str = "complete"

    def __post_init__(self) -> None:
        if self.patient_update not in ("complete", "never"):
            raise ValueError("patient_update must be 'complete' or 'never'")


def is_complete(patient: Patient) -> bool:
    """Every demographic element the engine maps is present: identifier, name (family or text) with a
    given name, gender, full birth date (YYYY-MM-DD)."""
    return bool(
        patient.identifiers
        and (patient.family or patient.name_text)
        and patient.given
        and patient.gender
        and patient.birth_date
        and len(patient.birth_date) == 10
    )


def _document(report: Report) -> dict[str, Any]:
    from pipelines.output.document import shape_document, wants_minimal
    from pipelines.output.minimal import shape_minimal

    # uncertain dateTimes (report.timezone_assumed) are marked by the shapers while they build the entries
    return shape_minimal(report) if wants_minimal(report) else shape_document(report)


def shape_harmonized(report: Report, options: HarmonizedOptions | None = None) -> dict[str, Any]:
    """The harmonized ``transaction`` Bundle of one report version (module docstring: keys, merge rules).

    Bundle.id is uuid5 of the source document id, so a resend is byte-identical.
    """
    options = options or HarmonizedOptions()
    if report.status == "appended":
        report = _addendum(report)
    source = _document(report)
    bid = uuid_for("HarmonizedTransaction", source["id"])
    if report.status_only:
        return tx.transaction(bid, _status_patches(report, source), report.issued)
    report_ident = fhir.identifier(report.identifier)
    entries: list[dict[str, Any]] = []
    derived: list[tuple[str, str]] = []  # (fullUrl, resourceType) of every derived resource
    org_url = None
    patient_url = None
    for entry in source["entry"]:
        url, res = entry["fullUrl"], entry["resource"]
        rtype = res["resourceType"]
        idents = res.get("identifier") or []
        if rtype == "Patient":
            patient_url = url
            if not idents:
                entries.append(tx.put_by_id(url, res))
            elif options.patient_update == "complete" and is_complete(report.patient):
                entries.append(tx.conditional_update(url, res, idents[0]))
            else:
                entries.append(tx.conditional_create(url, res, idents[0]))
        elif rtype in _CREATE_IF_ABSENT and idents and idents[0].get("system") and idents[0].get("value"):
            entries.append(tx.conditional_create(url, res, idents[0]))
            if rtype == "Organization" and org_url is None:
                org_url = url
        elif rtype in _UPDATE_BY_REPORT_ID:
            entries.append(tx.conditional_update(url, res, report_ident))
        else:
            entries.append(tx.put_by_id(url, res))
            if rtype == "Organization" and org_url is None:
                org_url = url
        derived.append((url, rtype))
    what = _source_entities(report, source)
    for url, rtype in derived:
        entries.append(tx.put_by_id(*_provenance(report, source["id"], url, rtype, what, org_url, patient_url)))
    return tx.transaction(bid, entries, report.issued)


def _addendum(report: Report) -> Report:
    """The addendum as its own report, linked to the original (module docstring)."""
    original = report.identifier
    ident = Ident(system=original.system, value=f"{original.value}/addendum/{digest(report.version_key, length=12)}")
    addendum_only = [s for s in report.sections if s.key == "addendum"]
    return replace(
        report,
        identifier=ident,
        status="final",
        sections=addendum_only or report.sections,
        relates_to=[*report.relates_to, ("appends", Ident(system=original.system, value=original.value))],
    )


def _source_entities(report: Report, source: dict[str, Any]) -> list[dict[str, Any]]:
    entities = [{"role": "source", "what": {"type": "Bundle", "identifier": source["identifier"]}}]
    sop = report.ids.get("sop_uid")
    if sop:
        entities.append(
            {"role": "source", "what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{sop}"}}}
        )
    return entities


def _provenance(
    report: Report,
    source_id: str,
    target_url: str,
    rtype: str,
    entities: list[dict[str, Any]],
    org_url: str | None,
    patient_url: str | None,
) -> tuple[str, dict[str, Any]]:
    pid = uuid_for("Provenance", source_id, target_url)
    prov: dict[str, Any] = {"resourceType": "Provenance", "id": pid, "target": [{"reference": target_url}]}
    if report.date:
        prov["occurredDateTime"] = report.date
    if report.issued:
        prov["recorded"] = report.issued
    prov["activity"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]
    }
    if patient_url and rtype != "Patient":
        prov["patient"] = {"reference": patient_url}
    agent_type = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]
    }
    who = {"reference": org_url} if org_url else {"display": "imaging report integration engine"}
    prov["agent"] = [{"type": agent_type, "who": who}]
    prov["entity"] = entities
    return urn(pid), prov


# OBR-25 (HL7 table 0123) -> (ServiceRequest.status, ImagingStudy.status or None = leave it).
_ORDER_STATUS: dict[str, tuple[str, str | None]] = {
    "O": ("active", None), "I": ("active", None), "S": ("active", None),
    "SCHEDULED": ("active", None), "ORDERED": ("active", None), "IN PROGRESS": ("active", None),
    "A": ("active", "available"), "P": ("active", "available"), "R": ("active", "available"),
    "N": ("active", "available"), "M": ("active", "available"),
    "F": ("completed", "available"), "C": ("completed", "available"), "U": ("completed", "available"),
    "X": ("revoked", "cancelled"), "CANCELLED": ("revoked", "cancelled"), "CANCELED": ("revoked", "cancelled"),
}  # fmt: skip


def order_statuses(order_status: str) -> tuple[str, str | None] | None:
    """ServiceRequest and ImagingStudy status for an OBR-25 value; None when it says nothing about them."""
    return _ORDER_STATUS.get(" ".join(order_status.upper().split()))


def _status_op(value: str) -> list[dict[str, Any]]:
    return [{"op": "add", "path": "/status", "value": value}]  # RFC 6902 add on a member replaces it


def _order_patches(accessions: list[dict[str, Any]], study_uids: list[str], status: str) -> list[dict[str, Any]]:
    mapped = order_statuses(status)
    if mapped is None:
        return []
    sr_status, is_status = mapped
    out = [tx.conditional_patch("ServiceRequest", a, _status_op(sr_status)) for a in accessions]
    if is_status:
        out += [
            tx.conditional_patch("ImagingStudy", fhir.study_uid_identifier(u), _status_op(is_status))
            for u in study_uids
        ]
    return out


def _status_patches(report: Report, source: dict[str, Any]) -> list[dict[str, Any]]:
    """A status-change version: patch DiagnosticReport and Composition status (and the order's)."""
    from pipelines.output.parts import composition_status

    ident = fhir.identifier(report.identifier)
    entries = [tx.conditional_patch("DiagnosticReport", ident, _status_op(report.status))]
    if any(e["resource"]["resourceType"] == "Composition" for e in source["entry"]):
        entries.append(tx.conditional_patch("Composition", ident, _status_op(composition_status(report.status))))
    code = "X" if report.status == "cancelled" else "F" if report.status == "final" else ""
    accessions = [fhir.identifier(o.accession) for o in report.orders if o.accession is not None]
    return entries + _order_patches(_unique(accessions), [], code)


def _unique(idents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for i in idents:
        key = (i["system"], i["value"])
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def shape_status_update(update: StatusUpdate) -> dict[str, Any] | None:
    """A status-only ORU: JSON patches of its ServiceRequest(s) (by accession) and ImagingStudy(ies) (by
    Study Instance UID) and nothing else, as a ``batch``: status notifications often precede the report that
    creates those resources, so an entry answered 404 (nothing to update yet) is the expected outcome for an
    order the server does not know, not a failure, and does not stop the other entries. None when OBR-25
    says nothing about order or study status."""
    accessions = _unique([fhir.identifier(o.accession) for o in update.orders if o.accession is not None])
    entries = _order_patches(accessions, [s.uid for s in update.studies], update.order_status)
    if not entries:
        return None
    keys = [f"{a['system']}|{a['value']}" for a in accessions] + [s.uid for s in update.studies]
    bid = uuid_for("HarmonizedStatus", update.order_status, update.issued or "", *keys)
    return tx.transaction(bid, entries, update.issued, batch=True)
