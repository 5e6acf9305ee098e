"""Approach 2, REST access to documents (eu-imaging.md §1.1, §1.6): one ``transaction`` per report version.

The transaction holds

* the Composition and the DiagnosticReport at their own ids (uuid5 of the report identifier: every version of a
  report updates the same two resources, so ``_history`` lists the versions, eu-imaging §2.6);
* the report's **own copies** of every resource they reference (Patient, ImagingStudy, ServiceRequest, findings,
  practitioners, organisation, ...): id = uuid5(report id, type, id in the document), so no two reports share a
  copy and a later version of the same report updates its copies instead of adding new ones;
* the document Bundle itself (``PUT Bundle/<id>``, unchanged) and its DocumentReferenceImagingReport
  (:mod:`pipelines.output.docref`), because resource access presupposes document access (IG api page).

Every entry is ``PUT <Type>/<id>`` with a deterministic id and ``fullUrl`` ``urn:uuid:<id>``; references between
entries stay ``urn:uuid:`` (the server rewrites them to ``<Type>/<id>``).

**Outputs: two per report version** (:func:`split_documents`, used by ``engine map`` and every sink): first the
document Bundle itself (kind ``rest-document``; the FHIR publisher sends it as ``PUT Bundle/<id>``), then the
transaction without it (kind ``transaction``, id uuid5 of the document id), whose DocumentReference points at the
document by ``attachment.url`` ``Bundle/<id>``. Both carry the same ``report_id``, so every sink keeps them in this
order. Why not one transaction with the Bundle as an entry (:func:`rest_transaction` builds that unit): the
official validator (org.hl7.fhir.validation 6.10.4) resolves the ``urn:uuid`` references and entry slices of a
Bundle nested in a transaction against the *outer* Bundle, so every nested document failed validation although it
is valid on its own; split, each file is what goes on the wire and each passes. Both writes are idempotent PUTs,
so a failure between them converges on retry. A resend of the same version is an
identical update, which a FHIR server treats as a no-op (HAPI: version unchanged). Findings that a later version
no longer contains keep their last version on the server (no deletes: a version never removes history).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

from pipelines.common.ids import uuid_for
from pipelines.common.model import Report
from pipelines.output.docref import document_reference, entry

__all__ = ["DOCUMENT_KIND", "copy_id", "rest_transaction", "shape_rest", "split_documents"]

#: ``Output.kind`` of a document Bundle that travels beside a transaction (sent as ``PUT Bundle/<id>``)
DOCUMENT_KIND = "rest-document"

_OWN_ID = ("Composition", "DiagnosticReport")  # already one logical resource per report


def copy_id(report_key: str, rtype: str, document_id: str) -> str:
    return uuid_for("rest-copy", report_key, rtype, document_id)


def _rewrite(node: Any, urls: dict[str, str]) -> Any:
    """A copy of ``node`` with every ``reference`` that names a document entry pointed at its copy."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in urls:
                out[key] = urls[value]
            else:
                out[key] = _rewrite(value, urls)
        return out
    if isinstance(node, list):
        return [_rewrite(item, urls) for item in node]
    return node


def rest_transaction(document: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The approach-2 transaction for one shaped document (or minimal-metadata collection) Bundle and its
    serialized bytes ``body``."""
    entries = document["entry"]
    drs = [e["resource"] for e in entries if e["resource"]["resourceType"] == "DiagnosticReport"]
    report_key = drs[0]["id"] if drs else document["id"]
    urls: dict[str, str] = {}
    ids: dict[str, str] = {}
    for e in entries:
        res = e["resource"]
        new_id = res["id"] if res["resourceType"] in _OWN_ID else copy_id(report_key, res["resourceType"], res["id"])
        ids[e["fullUrl"]] = new_id
        urls[e["fullUrl"]] = f"urn:uuid:{new_id}"
        urls[f"{res['resourceType']}/{res['id']}"] = f"urn:uuid:{new_id}"
    out: list[dict[str, Any]] = []
    patient_url: str | None = None
    for e in entries:
        res = _rewrite(e["resource"], urls)
        res["id"] = ids[e["fullUrl"]]
        out.append(entry(res))
        if res["resourceType"] == "Patient" and patient_url is None:
            patient_url = f"urn:uuid:{res['id']}"
    subject = {"reference": patient_url} if patient_url else {}
    out.append(entry(document))
    out.append(entry(document_reference(document, body, subject)))
    return {"resourceType": "Bundle", "id": document["id"], "type": "transaction", "entry": out}


def shape_rest(report: Report) -> tuple[dict[str, Any], str]:
    """``(transaction Bundle, "transaction")`` for a report (the ``rest`` model of :mod:`pipelines.output.models`)."""
    from pipelines.output import serialize, shape_document_model

    document, _kind = shape_document_model(report)
    return rest_transaction(document, serialize(document)), "transaction"


def split_documents(bundle: dict[str, Any], kind: str) -> list[tuple[dict[str, Any], str]]:
    """``[(document, "rest-document")..., (transaction without them, kind)]`` for a transaction carrying document
    (or collection) Bundle entries; ``[(bundle, kind)]`` for anything else. The remaining transaction gets the id
    uuid5("rest-transaction", its old id) so that no two outputs share a file name."""
    if bundle.get("type") != "transaction":
        return [(bundle, kind)]
    docs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Bundle"
            and e["resource"].get("type") in ("document", "collection")]
    if not docs:
        return [(bundle, kind)]
    rest = [e for e in bundle["entry"] if not any(e["resource"] is d for d in docs)]
    tx = {**bundle, "id": uuid_for("rest-transaction", bundle["id"]), "entry": rest}
    return [*((d, DOCUMENT_KIND) for d in docs), (tx, kind)]
