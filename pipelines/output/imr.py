"""IHE RAD IMR Report Creator: the Store Multimedia Report [RAD-141] transaction (ihe-imr.md §2.1, §4, §5).

``shape_imr(report, options) -> dict``: a FHIR R5 ``transaction`` Bundle (``meta.profile``
imr-store-multimedia-report-bundle) holding

* exactly one IMR DiagnosticReport: ``text`` = the report narrative with an
  ``imr-ref-ImagingSelection`` span per image reference; ``presentedForm`` = the HTML rendition (every span
  an ``<a href>`` to WADO-RS *rendered* content) with ``size`` and base64 SHA-1 ``hash``, and with the PDF
  Report option (``ImrOptions.pdf``) the same rendition as ``application/pdf`` (links kept); ``subject``,
  ``performer`` and ``resultsInterpreter`` as conditional references (below); ``study`` (R5 name of R4
  ``imagingStudy``) the IMR ImagingStudy; ``basedOn`` the IMR ServiceRequest (accession, ACSN);
* IMR ImagingStudy (Study Instance UID, modality, started, Endpoint), IMR ServiceRequest (when an
  accession is known), the ImagingSelections of the source (DICOM SR key images, regions, segments, SR
  content items) each with ``endpoint``, and one Imaging Study Endpoint per WADO-RS base URL;
* every entry ``request.method = POST``, ``request.url`` = resource type, ``urn:uuid`` fullUrls
  (uuid5), no ``contained`` resources (RC-02..RC-04). ``ifNoneExist`` on a business identifier makes a
  resend create nothing twice; each report version is its own DiagnosticReport (IMR has create semantics
  only; the DiagnosticReport carries the report identifier shared by all versions and a version identifier).

Patient, Organization and Practitioner are **referenced, never created** (RAD-141; closed issue 22): the
references are FHIR conditional references ``Patient?identifier=<system>%7C<value>`` (the same for
Organization and Practitioner), which a FHIR server resolves inside the transaction against the
resources it holds (FHIR http.html#trules; HAPI FHIR does; an unknown one fails the transaction with a
4xx, ihe-imr.md §2.1 "may reject"); an identifier holding ``&`` is referenced logically instead
(``_conditional_ref``). So the report needs identifiers for all three (PID-3, MSH-4 /
Institution, OBR-32 XCN-1 with assigning authority); a report without them, without a Study Instance UID,
modality, study date or ``issued`` cannot be an IMR report and raises :class:`~pipelines.errors.ModelRequirement`.

Known IMR/R5 gaps (ihe-imr.md §5.4, §8): the IMR profiles are R4 (the R5 resources name them in
``meta.profile``; R4-only elements are mapped to their R5 names: ``imagingStudy`` -> ``study``,
``Endpoint.payloadType`` -> ``payload.type``, ``ImagingStudy.procedureCode`` -> ``procedure``); the
span id ``ImagingSelection/{id}`` is the id sent in the Bundle, while POST lets the server assign its own id,
so each ImagingSelection also carries the identifier ``urn:ietf:rfc:3986|urn:uuid:{id}`` by which a reader
finds it (``ImagingSelection?identifier=``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.common import fhir
from pipelines.common.ids import urn, uuid_for
from pipelines.common.model import Ident, Report, Study
from pipelines.errors import ModelRequirement
from pipelines.output import imr_render, resources
from pipelines.output import transaction as tx
from pipelines.output.document import bundle_id
from pipelines.output.parts import build_parts, categories, report_code, resolve_extras

__all__ = ["IMR", "ImrOptions", "shape_imr"]

IMR = "https://profiles.ihe.net/RAD/IMR/StructureDefinition/"
_BUNDLE = IMR + "imr-store-multimedia-report-bundle"
_DR = IMR + "imr-diagnosticreport"
_STUDY = IMR + "imr-imagingstudy"
_ORDER = IMR + "imr-servicerequest"
_ENDPOINT = IMR + "imaging-study-endpoint"
_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
_DEFAULT_WADO = "https://wado-rs.invalid/dicom-web"  # RFC 6761 reserved: visibly unconfigured


@dataclass(frozen=True, slots=True)
class ImrOptions:
    """``wado_rs``: WADO-RS service root per site, keyed by the performing organisation's identifier value
    or name (the sending facility, MSH-4 / Institution Name), ``"default"`` for any other site. Without a
    configured URL the links point at ``https://wado-rs.invalid/dicom-web`` (inspection output only)."""

    wado_rs: Mapping[str, str] = field(default_factory=dict)
    pdf: bool = False  # PDF Report option: also an application/pdf rendition (needs the ``pdf`` extra)

    def base_for(self, report: Report) -> str:
        keys = []
        if report.performer is not None:
            keys += [i.value for i in report.performer.identifiers] + [report.performer.name]
        for key in [*keys, "default"]:
            if key in self.wado_rs:
                return self.wado_rs[key]
        return _DEFAULT_WADO


def _conditional_ref(rtype: str, ident: Ident | None, what: str) -> dict[str, Any]:
    """``Type?identifier=<system>%7C<value>``; for an identifier holding ``&`` (e.g. a PID-3 sent as
    ``PAT\\T\\0003``) a logical reference ``{type, identifier}`` instead: percent-encoded (``%26``) it is a
    correct query (RFC 3986), but the official validator decodes before splitting and reports "not a valid
    query string", and no other spelling keeps the value; a logical reference is valid R5 (the server keeps
    the identifier instead of resolving it to a literal reference)."""
    if ident is None:
        raise ModelRequirement(f"IMR references an existing {rtype} by identifier: the report has no {what}")
    if "&" in ident.system or "&" in ident.value:
        return {"type": rtype, "identifier": {"system": ident.system, "value": ident.value}}
    return {"reference": tx.match_url(rtype, {"system": ident.system, "value": ident.value})}


def _interpreter(report: Report) -> Ident | None:
    for person in report.interpreters:
        if person.identifiers:
            return person.identifiers[0]
    return None


def shape_imr(report: Report, options: ImrOptions | None = None) -> dict[str, Any]:
    """The RAD-141 transaction Bundle of one report version (module docstring). Raises ModelRequirement."""
    options = options or ImrOptions()
    if not report.studies:
        raise ModelRequirement("IMR needs an ImagingStudy: the report has no Study Instance UID")
    if not report.issued:
        raise ModelRequirement("IMR needs DiagnosticReport.issued: the report has no sign-off time")
    patient_ref = _conditional_ref(
        "Patient", report.patient.identifiers[0] if report.patient.identifiers else None, "patient identifier"
    )
    org = report.performer.identifiers[0] if report.performer and report.performer.identifiers else None
    org_ref = _conditional_ref("Organization", org, "performing organization identifier")
    interp_ref = _conditional_ref("Practitioner", _interpreter(report), "results interpreter with an identifier")
    base = options.base_for(report)
    parts = build_parts(report, with_studies=True)
    resolve_extras(report, parts)
    swap = {parts.patient_url: patient_ref}
    if parts.org_url:
        swap[parts.org_url] = org_ref

    endpoint_ident = {"system": "urn:ietf:rfc:3986", "value": base}
    endpoint_url = urn(uuid_for("Endpoint", base))
    endpoint = {
        "resourceType": "Endpoint",
        "id": uuid_for("Endpoint", base),
        "meta": {"profile": [_ENDPOINT]},
        "identifier": [endpoint_ident],
        "status": "active",
        "connectionType": [{"coding": [{"system": _CONNECTION, "code": "dicom-wado-rs"}]}],
        "name": "WADO-RS",
        "payload": [{"type": [{"coding": [{"system": fhir.DCM, "code": "113014", "display": "DICOM Study"}]}]}],
        "address": base,
    }
    entries: list[dict[str, Any]] = [tx.conditional_create(endpoint_url, endpoint, endpoint_ident)]
    keep = {endpoint_url}
    study_urls = []
    for url, study in parts.studies:
        src = next(s for s in report.studies if uuid_for("ImagingStudy", s.uid) == study["id"])
        modalities = _modalities(report, src)
        if not modalities or not src.started:
            raise ModelRequirement("IMR ImagingStudy needs modality and started (study date)")
        study = _swap(study, swap)
        study["modality"] = [{"coding": [{"system": fhir.DCM, "code": m}]} for m in modalities]
        study["meta"] = {"profile": [_STUDY]}
        study["endpoint"] = [{"reference": endpoint_url}]
        entries.append(_post(url, study, study["identifier"][0]))
        keep.add(url)
        study_urls.append(url)
    for url, order in parts.orders:
        order = _swap(order, swap)
        order["meta"] = {"profile": [_ORDER]}
        entries.append(_post(url, order, order["identifier"][0]))
        keep.add(url)
    selections = [(u, r) for u, r in parts.others if r["resourceType"] == "ImagingSelection"]
    keep.update(u for u, _ in selections)
    refs: list[imr_render.Ref] = []
    sections = {urn(x.resource["id"]): x.section or "findings" for x in report.extras}
    for n, (url, sel) in enumerate(selections, start=1):
        sel = _prune(_swap(sel, swap), keep | {t["reference"] for t in swap.values() if "reference" in t})
        ident = {"system": "urn:ietf:rfc:3986", "value": url}
        sel["identifier"] = [*(sel.get("identifier") or []), ident]
        sel["endpoint"] = [{"reference": endpoint_url}]
        entries.append(_post(url, sel, ident))
        refs.append((sections.get(url, "findings"), sel["id"], _label(sel, n), sel))
    dr_url, dr = _diagnostic_report(report, parts, refs, patient_ref, org_ref, interp_ref, study_urls, base)
    if options.pdf:
        html_doc = base64.b64decode(dr["presentedForm"][0]["data"])
        pdf = imr_render.attachment("application/pdf", imr_render.pdf_rendition(html_doc), report.title)
        dr["presentedForm"].append(pdf)
    entries.insert(0, _post(dr_url, dr, dr["identifier"][1]))
    bid = uuid_for("ImrTransaction", bundle_id(report))
    return tx.transaction(bid, entries, report.issued, meta={"profile": [_BUNDLE]})


def _modalities(report: Report, study: Study) -> list[str]:
    """ImagingStudy.modality (1..* in IMR): the study's modalities, else its series' modalities, else for a
    DICOM SR source ``SR``: the study holds at least the SR series itself (DICOM CID 33)."""
    found = list(study.modalities) or sorted({s.modality for s in study.series if s.modality})
    if not found and report.source == "dicom-sr":
        found = ["SR"]
    return found


def _post(url: str, res: dict[str, Any], ident: dict[str, Any]) -> dict[str, Any]:
    """``POST Type`` (RC-03) with ``ifNoneExist`` on a business identifier: a resend creates nothing twice.
    The deterministic id stays in the body (the server assigns its own on create)."""
    entry = tx.conditional_create(url, res, ident)
    entry["resource"] = res
    return entry


def _label(sel: dict[str, Any], n: int) -> str:
    code = sel.get("code", {})
    name = code.get("text") or next((c.get("display") for c in code.get("coding", []) if c.get("display")), None)
    return f"{name or 'Image'} {n}"


def _swap(value: Any, swap: Mapping[str, dict[str, Any]]) -> Any:
    """Copy with the references to participants replaced by their conditional (or logical, see
    :func:`_conditional_ref`) references."""
    if isinstance(value, list):
        return [_swap(v, swap) for v in value]
    if isinstance(value, dict):
        out = {k: _swap(v, swap) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in swap:
            target = swap[ref]
            if "reference" in target:
                out["reference"] = target["reference"]
            else:  # a logical reference: type and identifier instead of the literal one
                out = {k: v for k, v in out.items() if k != "reference"} | target
        return out
    return value


def _prune(value: Any, known: set[str]) -> Any:
    """Drop literal references to resources the IMR Bundle does not carry (findings Observations, ...):
    keep the identifier of such a reference when it has one, else the whole reference goes."""
    if isinstance(value, list):
        items = [_prune(v, known) for v in value]
        return [i for i in items if i is not None]
    if not isinstance(value, dict):
        return value
    ref = value.get("reference")
    if isinstance(ref, str) and ref.startswith("urn:uuid:") and ref not in known:
        rest = {k: v for k, v in value.items() if k != "reference"}
        return rest if "identifier" in rest else None
    out = {}
    for k, v in value.items():
        pruned = _prune(v, known)
        if pruned is not None and pruned != []:
            out[k] = pruned
    return out


def _diagnostic_report(
    report: Report,
    parts: Any,
    refs: list[imr_render.Ref],
    patient_ref: dict[str, Any],
    org_ref: dict[str, Any],
    interp_ref: dict[str, Any],
    study_urls: list[str],
    base: str,
) -> tuple[str, dict[str, Any]]:
    dr_id = uuid_for("ImrDiagnosticReport", bundle_id(report))
    dr: dict[str, Any] = {"resourceType": "DiagnosticReport", "id": dr_id, "meta": {"profile": [_DR]}}
    dr["text"] = {"status": "additional", "div": imr_render.narrative_div(report, refs)}
    version = {"system": "urn:ietf:rfc:3986", "value": urn(bundle_id(report))}
    dr["identifier"] = [fhir.identifier(report.identifier), version]
    if parts.orders:
        dr["basedOn"] = [{"reference": u} for u, _ in parts.orders]
    dr["status"] = report.status
    dr["category"] = categories(report)
    dr["code"] = report_code(report)
    dr["subject"] = patient_ref
    if report.effective and report.effective_end:  # OBR-7 .. OBR-8
        dr["effectivePeriod"] = {"start": report.effective, "end": report.effective_end}
    elif report.effective:
        dr["effectiveDateTime"] = report.effective
    dr["issued"] = report.issued
    dr["performer"] = [org_ref]
    dr["resultsInterpreter"] = [interp_ref]
    dr["study"] = [{"reference": u} for u in study_urls]
    if report.conclusion:
        dr["conclusion"] = report.conclusion
    header = _header(report)
    raw = imr_render.html_rendition(report, refs, header, lambda r: imr_render.wado_rendered_url(base, r[3]))
    dr["presentedForm"] = [imr_render.attachment("text/html", raw, report.title)]
    return urn(dr_id), dr


def _header(report: Report) -> list[tuple[str, str]]:
    """The header data of the IMR mapping table (ihe-imr.md §4.1.1) for the rendition."""
    p = report.patient
    name = resources.human_name(p, p.name_text)
    display = " ".join([*name.get("given", []), name.get("family", "")]).strip() or name.get("text", "")
    pid = p.identifiers[0].value if p.identifiers else ""
    acsn = next((o.accession.value for o in report.orders if o.accession is not None), "")
    interp = report.interpreters[0] if report.interpreters else None
    interp_name = " ".join([*(interp.given if interp else []), (interp.family or interp.text or "") if interp else ""])
    study = report.studies[0]
    return [
        ("Patient", f"{display} ({pid})" if display else pid),
        ("Accession number", acsn),
        ("Study date", _shown(study.started, report)),
        ("Study", study.description or ""),
        ("Performing organization", report.performer.name if report.performer else ""),
        ("Results interpreter", interp_name.strip()),
        ("Report status", report.status),
        ("Signed", _shown(report.issued, report)),
    ]


def _shown(value: str | None, report: Report) -> str:
    """A dateTime/instant as the rendition shows it: without the offset when the source sent none and none is
    configured (the deployment default is only there because FHIR needs one; text never claims a zone nobody
    sent, as SR DATETIME narrative)."""
    if not value:
        return ""
    if report.timezone_assumed and value.endswith(report.timezone) and "T" in value:
        return value[: -len(report.timezone)]
    return value
