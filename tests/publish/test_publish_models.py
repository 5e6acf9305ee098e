"""The output models without a server: the registry, the ``rest`` transaction, the DocumentReference, the
approach-1 transaction, ``engine map --model rest`` and the outgoing validation gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main as engine_main
from engine.convert import Converter
from engine.errors import PermanentError
from engine.publishers.fhir import publish_unit
from engine.publishers.gate import check_unit
from engine.publishers.supersede import apply_supersede, documents_only, harmonized_version, keep_patient
from pipelines.errors import MappingError
from pipelines.output.docref import document_transaction
from pipelines.output.models import get_model, model_names
from tests.publish.messages import oru, version_sequence

SAMPLE = version_sequence(filler="M1")


def _one(model: str, message: bytes = SAMPLE[1]) -> tuple[Any, dict[str, Any]]:
    """The output (for ``rest``: the transaction, the last of the version's two outputs) and its body."""
    outputs = Converter(model=model).convert(message).outputs
    assert len(outputs) == (2 if model == "rest" else 1)
    return outputs[-1], json.loads(outputs[-1].body)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "reference" and isinstance(v, str)] + \
            [r for k, v in node.items() if k != "reference" for r in _refs(v)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def test_registry_lists_the_models_and_refuses_unknown_ones() -> None:
    assert {"document", "rest"} <= set(model_names())
    assert "system:transaction" in get_model("rest").needs
    with pytest.raises(ValueError, match=r"available: .*document.*rest"):
        Converter(model="no-such-model")


def test_rest_transaction_has_own_copies_and_resolvable_references() -> None:
    doc_output, document = _one("document")
    first, output = Converter(model="rest").convert(SAMPLE[1]).outputs  # the document, then the transaction
    assert first.kind == "rest-document" and first.body == doc_output.body and first.bundle_id == document["id"]
    assert publish_unit(first) == document  # sent as PUT Bundle/<id>, no DocumentReference wrapper
    tx = json.loads(output.body)
    assert output.kind == "transaction" and tx["type"] == "transaction" and output.bundle_id != document["id"]
    assert first.report_id == output.report_id and first.partition_key == output.partition_key  # kept in order
    types = [e["resource"]["resourceType"] for e in tx["entry"]]
    assert types[:2] == ["Composition", "DiagnosticReport"] and types[-1] == "DocumentReference"
    assert "Bundle" not in types
    assert tx["entry"][-1]["resource"]["content"][0]["attachment"]["url"] == f"Bundle/{document['id']}"
    doc_ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in document["entry"]}
    tx_ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in tx["entry"][:-1]}
    assert tx_ids["Composition"] == doc_ids["Composition"] and tx_ids["DiagnosticReport"] == doc_ids["DiagnosticReport"]
    assert output.report_id == doc_output.report_id == doc_ids["DiagnosticReport"]
    for rtype in ("Patient", "ImagingStudy", "ServiceRequest", "Organization"):
        assert tx_ids[rtype] != doc_ids[rtype]  # the report's own copy
    full_urls = {e["fullUrl"] for e in tx["entry"]}
    for e in tx["entry"]:
        assert e["request"] == {"method": "PUT", "url": f"{e['resource']['resourceType']}/{e['resource']['id']}"}
        assert e["fullUrl"] == f"urn:uuid:{e['resource']['id']}"
        assert set(_refs(e["resource"])) <= full_urls


def test_rest_copies_are_per_report_and_stable_across_versions() -> None:
    ids = [{e["request"]["url"] for e in _one("rest", m)[1]["entry"][:-1]} for m in SAMPLE]
    assert ids[0] == ids[1] == ids[2]  # versions update the same resources
    other = {e["request"]["url"] for e in _one("rest", oru(filler="M2", status="F", when="20260105113000+0100",
                                                             text="Other report."))[1]["entry"][:-1]}
    patients = [u for u in ids[0] | other if u.startswith("Patient/")]
    assert len(patients) == 2  # same patient, two reports: two copies (approach 2, no harmonization)
    assert _one("rest")[0].body == _one("rest")[0].body  # deterministic


def test_document_reference_and_approach_1_transaction() -> None:
    output, document = _one("document")
    tx = publish_unit(output)
    assert [e["request"]["url"] for e in tx["entry"]] == [f"Bundle/{document['id']}",
                                                          f"DocumentReference/{tx['entry'][1]['resource']['id']}"]
    doc = tx["entry"][1]["resource"]
    assert doc["status"] == "current" and doc["docStatus"] == "final"
    assert doc["type"]["coding"][0]["code"] == "85430-7"
    assert doc["category"][0]["coding"][0]["code"] == "Medical-Imaging"
    assert doc["subject"] == {"type": "Patient", "identifier": {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        "system": doc["subject"]["identifier"]["system"], "value": "PAT0001"}}
    uses = {i["use"]: i for i in doc["identifier"] if i["use"] != "secondary"}
    assert uses["official"] == {"use": "official", **document["identifier"]}
    assert uses["usual"]["value"] == "M1"  # the report identifier shared by every version
    secondary = {i["system"]: i["value"] for i in doc["identifier"] if i["use"] == "secondary"}
    assert secondary["urn:dicom:uid"] == "urn:oid:2.25.1000001" and "ACCM1" in secondary.values()
    attachment = doc["content"][0]["attachment"]
    assert attachment["size"] == str(len(output.body)) and attachment["url"] == f"Bundle/{document['id']}"
    assert doc["content"][0]["profile"][0]["valueCanonical"].endswith("/BundleReportEuImaging")
    assert doc["date"] == document["timestamp"]


def test_approach_1_without_a_patient_identifier_sends_the_patient() -> None:
    _, document = _one("document")
    patient = next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Patient")
    del patient["identifier"]
    tx = document_transaction(document, b"{}")
    assert [e["request"]["url"].split("/")[0] for e in tx["entry"]] == ["Bundle", "Patient", "DocumentReference"]
    assert tx["entry"][2]["resource"]["subject"] == {"reference": f"urn:uuid:{patient['id']}"}
    document["entry"] = [e for e in document["entry"] if e["resource"]["resourceType"] != "Patient"]
    with pytest.raises(MappingError, match="no identifier"):
        document_transaction(document, b"{}")


def test_engine_map_writes_rest_transactions(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for n, message in enumerate(SAMPLE):
        (source / f"{n}.hl7").write_bytes(message)
    assert engine_main(["map", "--model", "rest", "--out", str(tmp_path / "out"), str(source)]) == 0
    written = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json") if p.name != "summary.json"]
    assert len(written) == 8  # per version: the document Bundle, the transaction referencing it
    assert sorted(b["type"] for b in written) == ["document"] * 4 + ["transaction"] * 4


class _Server:
    """What the server holds: DocumentReferences found by the supersede search."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def request(self, method: str, url: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> dict[str, Any]:
        assert method == "GET" and url == "DocumentReference"
        return {"entry": [{"resource": d} for d in self.docs]}


def _docref(message: bytes) -> dict[str, Any]:
    tx = _one("rest", message)[1]
    return next(e["resource"] for e in tx["entry"] if e["resource"]["resourceType"] == "DocumentReference")


def test_supersede_chain_and_stale_versions() -> None:
    p, f, c = (_docref(m) for m in SAMPLE[:3])
    server = _Server([{**p, "meta": {"versionId": "1", "profile": p["meta"]["profile"]}}])
    tx, stale = apply_supersede(server, _one("rest", SAMPLE[1])[1])
    assert not stale
    new, old = (e["resource"] for e in tx["entry"] if e["resource"]["resourceType"] == "DocumentReference")
    assert new["status"] == "current" and new["relatesTo"][0]["target"]["reference"] == f"urn:uuid:{p['id']}"
    assert old["status"] == "superseded" and old["id"] == p["id"] and "versionId" not in old.get("meta", {})
    # F arrives after C: stored superseded, and nothing but DocumentReferences is sent
    server.docs = [{**p, "status": "superseded"}, {**c, "status": "current"}]
    tx, stale = apply_supersede(server, _one("rest", SAMPLE[1])[1])
    assert stale
    late = documents_only(tx)
    assert {e["resource"]["resourceType"] for e in late["entry"]} == {"DocumentReference"}
    by_id = {e["resource"]["id"]: e["resource"] for e in late["entry"]}
    assert by_id[f["id"]]["status"] == "superseded" and by_id[c["id"]]["status"] == "current"
    assert by_id[f["id"]]["subject"]["reference"].startswith("Patient/")  # the copy the newer version wrote


def test_gate_passes_our_units_and_stops_broken_ones() -> None:
    for model in ("document", "rest"):
        for message in SAMPLE:
            for output in Converter(model=model).convert(message).outputs:
                check_unit(publish_unit(output))
    _, tx = _one("rest")
    dr = next(e["resource"] for e in tx["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    del dr["result"]
    with pytest.raises(PermanentError, match=r"DiagnosticReport/.*result missing \(DiagnosticReportEuImaging\)"):
        check_unit(tx)
    _, tx = _one("rest")
    doc = tx["entry"][-1]["resource"]
    doc["status"] = 42  # structure: fhir.resources refuses it
    with pytest.raises(PermanentError, match=r"DocumentReference/.*status"):
        check_unit(tx)
    _, tx = _one("rest")
    tx["entry"][-1]["resource"]["category"] = [{"coding": [{"system": "http://loinc.org", "code": "85430-7"}]}]
    with pytest.raises(PermanentError, match="Medical-Imaging"):
        check_unit(tx)


class _Reports:
    """What the server holds: DiagnosticReports found by the harmonized version check."""

    def __init__(self, reports: list[dict[str, Any]]) -> None:
        self.reports = reports

    def request(self, method: str, url: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> dict[str, Any]:
        assert method == "GET" and url == "DiagnosticReport" and params and "|" in params["identifier"]
        return {"entry": [{"resource": r} for r in self.reports]}


def test_harmonized_version_new_resend_stale_and_patient_kept() -> None:
    p, f, c = (_one("harmonized", m)[1] for m in SAMPLE[:3])
    dr_of = {name: next(e["resource"] for e in tx["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
             for name, tx in (("p", p), ("f", f), ("c", c))}
    assert harmonized_version(_Reports([]), f) == "new"
    assert harmonized_version(_Reports([dr_of["p"]]), f) == "new"
    assert harmonized_version(_Reports([dr_of["f"]]), f) == "resend"
    assert harmonized_version(_Reports([dr_of["c"]]), f) == "stale"
    assert harmonized_version(_Reports([{**dr_of["f"], "status": "cancelled"}]), f) == "stale"
    assert harmonized_version(_Reports([]), json.loads(Converter(model="rest").convert(SAMPLE[1]).outputs[-1].body)) \
        == "new"  # not a harmonized transaction: no search
    patient = next(e for e in f["entry"] if e["resource"]["resourceType"] == "Patient")
    kept = next(e for e in keep_patient(f)["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient["request"]["method"] == "PUT"  # a complete message replaces; its resend only creates if absent
    assert kept["request"] == {"method": "POST", "url": "Patient",
                               "ifNoneExist": patient["request"]["url"].split("?", 1)[1]}
    assert kept["fullUrl"] == patient["fullUrl"] and kept["resource"] == patient["resource"]
