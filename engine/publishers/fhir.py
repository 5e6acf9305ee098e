"""FhirSink: the :class:`engine.sinks.base.Sink` that publishes every output to a FHIR R5 server over REST.

What is sent for an :class:`engine.convert.Output` (by the Bundle type of ``Output.body``):

* ``transaction`` / ``batch`` (models ``rest``, ``harmonized``, ``imr``): POSTed to the base URL as is;
* a document Bundle of kind ``rest-document`` (model ``rest``: the document that the next output, the
  transaction, points at): ``PUT Bundle/<id>`` as is;
* ``document`` / ``collection`` (model ``document``, approach 1): wrapped by
  :func:`pipelines.output.docref.document_transaction` into one transaction with ``PUT Bundle/<id>`` and its
  DocumentReferenceImagingReport;
* any other resource: ``PUT <Type>/<id>`` (``POST <Type>`` without an id).

The ``rest`` model already yields the document and the transaction as two outputs (:mod:`pipelines.output.rest`).
A transaction that still carries a document (or collection) Bundle entry (another producer of such units) is split
the same way on the wire: the Bundle is sent on its own first (``PUT Bundle/<id>``) and the transaction without it
right after: the official validator (org.hl7.fhir.validation 6.10.4) resolves the
``urn:uuid`` references and entry slices of a Bundle nested in a transaction against the outer Bundle, so every
nested document fails validation although it is valid on its own; both requests are idempotent PUTs, so a retry
after a failure between them converges (a consumer may briefly see the Bundle before its DocumentReference, which
is the entry point of document access).

Before a transaction that carries a DocumentReference with a report identifier is sent, earlier versions of the
report are superseded in the same transaction (:mod:`engine.publishers.supersede`; ``supersede: false`` turns it
off); a harmonized version older than the server's DiagnosticReport is not sent at all, and the resend of
the version the server holds never replaces the Patient (:func:`engine.publishers.supersede.harmonized_version`).
With ``validate: true`` each unit first passes :mod:`engine.publishers.gate` (PermanentError otherwise).

``write`` builds and checks the unit (permanent problems surface at once, per envelope); ``flush`` sends what was
written: outputs of one report (``Output.report_id``) in order, different reports concurrently, at most
``concurrency`` requests in flight. Failures are classified by :class:`engine.publishers.client.FhirClient`; when
several outputs fail, a transient failure wins (the worker retries the batch; idempotent PUTs make the resend of the
outputs that went through a no-op). A batch response entry with a 4xx/5xx status fails like the whole request.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.convert import Output
from engine.errors import PermanentError, TransientError
from engine.publishers.client import FhirClient, FhirRejected, outcome_reason
from engine.publishers.settings import FhirSettings
from engine.publishers.supersede import apply_supersede, documents_only, harmonized_version, keep_patient
from engine.sources.base import Envelope
from pipelines.output.docref import document_transaction
from pipelines.output.rest import DOCUMENT_KIND

__all__ = ["FhirSink", "publish_unit"]

log = logging.getLogger("engine.publishers.fhir")


def publish_unit(output: Output) -> dict[str, Any]:
    """What is sent for ``output``: a transaction/batch Bundle, or a single resource (see the module docstring)."""
    try:
        body = json.loads(output.body)
    except ValueError as exc:
        raise PermanentError(f"output {output.bundle_id} is not JSON") from exc
    if not isinstance(body, dict) or "resourceType" not in body:
        raise PermanentError(f"output {output.bundle_id} is not a FHIR resource")
    if body["resourceType"] == "Bundle" and body.get("type") in ("document", "collection") \
            and output.kind != DOCUMENT_KIND:
        return document_transaction(body, output.body)
    return body


class FhirSink:
    name = "fhir"

    def __init__(self, settings: FhirSettings, client: FhirClient | None = None) -> None:
        self.settings = settings
        if settings.validate:
            from engine.publishers.gate import require_library

            require_library()
        self.client = client or FhirClient(settings)
        self._pending: list[tuple[str, dict[str, Any]]] = []  # (report id, unit)
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="fhir")
        self._down = False
        self.sent = 0  # units the server confirmed

    def write(self, output: Output, envelope: Envelope) -> None:
        unit = publish_unit(output)
        if self.settings.validate:
            from engine.publishers.gate import check_unit

            check_unit(unit)
        self._pending.append((output.report_id, unit))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        groups: dict[str, list[dict[str, Any]]] = {}
        for report_id, unit in pending:
            groups.setdefault(report_id, []).append(unit)
        futures = [self._pool.submit(self._send_group, units) for units in groups.values()]
        transient: TransientError | None = None
        permanent: PermanentError | None = None
        for future in futures:
            try:
                future.result()
            except TransientError as exc:
                transient = transient or exc
            except PermanentError as exc:
                permanent = permanent or exc
        self._down = transient is not None
        if transient is not None:
            raise transient
        if permanent is not None:
            raise permanent

    def _send_group(self, units: list[dict[str, Any]]) -> None:
        for unit in units:
            self.send(unit)

    def send(self, unit: dict[str, Any]) -> dict[str, Any]:
        """Send one unit now (supersede step included); returns the server's response body."""
        if unit.get("resourceType") == "Bundle" and unit.get("type") in ("transaction", "batch"):
            unit = self._documents_first(unit)
            if self.settings.supersede:
                unit, stale = apply_supersede(self.client, unit)
                if stale:
                    log.info("stale report version: only its DocumentReference and Bundle are written",
                             extra={"bundle_id": unit.get("id")})
                    unit = documents_only(unit)
                else:
                    version = harmonized_version(self.client, unit)
                    if version == "stale":
                        log.info("stale report version: the server holds a newer DiagnosticReport, nothing is sent",
                                 extra={"bundle_id": unit.get("id")})
                        self.sent += 1
                        return {}
                    if version == "resend":
                        unit = keep_patient(unit)
            try:
                response = self.client.request("POST", "", unit)
            except FhirRejected as exc:
                if exc.status == 409 and _conditional(unit):
                    # Two transactions creating the same shared resource (harmonized Patient, Organization, ...)
                    # at once: the server's uniqueness check refuses the loser with 409 (HAPI-0550). Sent again
                    # the conditional entries match what the winner created, so this is transient.
                    raise TransientError(f"{exc} (concurrent conditional write; retried)") from exc
                raise
            if unit["type"] == "batch":
                _check_batch(response, unit)
        elif unit.get("id"):
            response = self.client.request("PUT", f"{unit['resourceType']}/{unit['id']}", unit)
        else:
            response = self.client.request("POST", str(unit["resourceType"]), unit)
        self.sent += 1
        return response

    def _documents_first(self, unit: dict[str, Any]) -> dict[str, Any]:
        """PUT every document/collection Bundle entry on its own, then return the transaction without them."""
        kept = []
        for entry in unit.get("entry", []):
            res = entry.get("resource", {})
            if res.get("resourceType") == "Bundle" and res.get("type") in ("document", "collection") and res.get("id"):
                self.client.request("PUT", f"Bundle/{res['id']}", res)
            else:
                kept.append(entry)
        return {**unit, "entry": kept} if len(kept) != len(unit.get("entry", [])) else unit

    def healthy(self) -> bool:
        """False while the server's last answer was a transient failure (``/readyz`` shows it)."""
        return not self._down

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()


def _conditional(unit: dict[str, Any]) -> bool:
    """True when a transaction/batch has conditional creates or updates (``ifNoneExist``, ``Type?query`` URLs)."""
    for entry in unit.get("entry", []):
        request = entry.get("request", {})
        if request.get("ifNoneExist") or "?" in str(request.get("url", "")):
            return True
    return False


def _check_batch(response: dict[str, Any], unit: dict[str, Any] | None = None) -> None:
    """A batch answers 200 even when entries failed: classify the entries like whole responses.

    Exception: a 404 answering a ``PATCH`` entry (the harmonized model's status-only updates of a ServiceRequest or
    ImagingStudy) means "nothing to update yet" (the status message came before the report that creates the
    resource): it is not an error, the later report carries the status."""
    worst: Exception | None = None
    requests = [e.get("request", {}) for e in (unit or {}).get("entry", [])]
    for n, e in enumerate(response.get("entry", [])):
        result = e.get("response", {})
        method = requests[n].get("method") if n < len(requests) else None
        try:
            status = int(str(result.get("status", "0")).split()[0])
        except ValueError:
            status = 0
        if 200 <= status < 300 or (status == 404 and method == "PATCH"):
            continue
        outcome = result.get("outcome")
        if status in (429, 503) or status >= 500 or status == 0:
            worst = TransientError(f"FHIR batch entry {n}: HTTP {status}")
            break
        worst = worst or FhirRejected(f"FHIR batch entry {n}: HTTP {status} {outcome_reason(outcome)}", status,
                                      outcome)
    if worst is not None:
        raise worst
