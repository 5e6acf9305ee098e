"""``engine run`` publishing to a real HAPI FHIR R5 server (models ``document``, ``rest``, ``harmonized`` and ``imr``),
resends, version sequences, harmonization (one Patient, ImagingStudy, ServiceRequest), status-only updates, a
permanent 4xx into the dead letters, ``engine validate`` against the server's CapabilityStatement, and the official
validator over every unit the publisher put on the wire."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from engine.cli import main as engine_main
from engine.convert import Converter
from engine.outcomes import Conversion
from engine.publishers.client import FhirClient
from engine.publishers.fhir import FhirSink
from engine.publishers.settings import FhirSettings
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sources.base import CONTENT_HL7V2, Envelope
from engine.store import MessageStore, StoreSource
from engine.worker import RetryPolicy, Worker
from pipelines.output.models import TRANSACTION, Model, register
from tests.conftest import TESTDATA
from tests.fhir_server import HapiServer
from tests.models import oru_factory as hoc
from tests.models.conftest import FHIR_JSON
from tests.models.helpers import one_bundle
from tests.models.oru_factory import ACCESSION_SYSTEM
from tests.models.test_hapi_models import _precreate_participants
from tests.publish.conftest import (
    engine_for,
    finished,
    history_total,
    search,
    send_mllp,
    snapshot,
    store_counts,
    wait_for,
)
from tests.publish.messages import oru, version_sequence
from tests.runtime.runtime_harness import REPO

pytestmark = pytest.mark.integration

VALIDATOR = REPO.parent / "shared" / "tools" / "fhir-validator" / "validate.sh"
SR_SAMPLE = REPO.parent / "shared" / "testdata" / "dicom-sr-hl7-ig" / "Example-MeasurementReport.json"


def _chain(base: str) -> list[dict[str, Any]]:
    """The DocumentReferences of the server, oldest first."""
    return sorted(search(base, "DocumentReference"), key=lambda d: d["date"])


@pytest.mark.parametrize("model", ["document", "rest"])
def test_engine_run_versions_and_resends(fhir: HapiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         model: str) -> None:
    versions = version_sequence(filler=f"R{model}")
    engine = engine_for(tmp_path, fhir.url, model, monkeypatch)
    engine.start()
    try:
        send_mllp(engine, versions)
        wait_for(lambda: finished(tmp_path) == 4, 90, "4 versions published")
        assert store_counts(tmp_path) == {"published": 4}, engine.log_tail()

        # approach 1/2: one Bundle and one DocumentReference per version; P, F, C superseded, the addendum current
        assert len(search(fhir.url, "Bundle")) == 4
        chain = _chain(fhir.url)
        assert [d["status"] for d in chain] == ["superseded", "superseded", "superseded", "current"]
        assert [d["docStatus"] for d in chain] == ["preliminary", "final", "corrected", "corrected"]
        for older, newer in itertools.pairwise(chain):
            assert newer["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{older['id']}"
            assert newer["relatesTo"][0]["code"]["coding"][0]["code"] == "replaces"
        for doc in chain:
            assert doc["content"][0]["attachment"]["url"].startswith("Bundle/")
            assert {"85430-7"} <= {c["code"] for c in doc["type"]["coding"]}
        accession = next(i for i in chain[-1]["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code")
                         == "ACSN")
        assert len(search(fhir.url, "DocumentReference", identifier=f"{accession['system']}|{accession['value']}")) == 4

        if model == "rest":  # one DiagnosticReport / Composition per report, updated per version
            (dr,) = search(fhir.url, "DiagnosticReport")
            (comp,) = search(fhir.url, "Composition")
            assert dr["status"] == "corrected" and history_total(fhir.url, f"DiagnosticReport/{dr['id']}") == 4
            assert history_total(fhir.url, f"Composition/{comp['id']}") == 4
            assert len(search(fhir.url, "Patient")) == 1 and len(search(fhir.url, "ImagingStudy")) == 1
            assert chain[-1]["subject"]["reference"].startswith("Patient/")
        else:  # approach 1: documents only, the subject is a logical reference
            assert search(fhir.url, "DiagnosticReport") == [] and search(fhir.url, "Patient") == []
            assert chain[-1]["subject"]["identifier"]["value"] == "PAT0001"

        before = snapshot(fhir.url)
        send_mllp(engine, versions[::-1] + versions)  # resends, the old versions late
        wait_for(lambda: finished(tmp_path) == 12, 120, "resends published")
        assert store_counts(tmp_path) == {"published": 12}, engine.log_tail()
        assert snapshot(fhir.url) == before  # nothing changed: no new resource, no new version
        assert list((tmp_path / "dlq").glob("*.json")) == []
    finally:
        code = engine.terminate()
    assert code == 0, engine.log_tail()


class _Tampered(Converter):
    """Real conversion, then a DiagnosticReport reference the server cannot resolve (the 4xx under test)."""

    def convert(self, data: bytes) -> Conversion:
        result = super().convert(data)
        outputs = []
        for output in result.outputs:
            body = json.loads(output.body)
            for entry in body["entry"]:
                if entry["resource"]["resourceType"] == "DiagnosticReport":
                    entry["resource"]["subject"] = {"reference": "Patient/no-such-patient"}
            outputs.append(type(output)(output.bundle_id, json.dumps(body).encode(), output.report_id,
                                        output.partition_key, output.kind, output.ids))
        result.outputs[:] = outputs
        return result


def test_permanent_4xx_goes_to_the_dead_letters_with_the_operation_outcome(fhir: HapiServer, tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "store" / "messages.db")
    sink = FhirSink(FhirSettings.from_mapping({"model": "rest"}, {"FHIR_BASE_URL": fhir.url}))
    worker = Worker(StoreSource(store), _Tampered(model="rest"), [sink], FolderDeadLetters(tmp_path / "dlq"),
                    policy=RetryPolicy(attempts=2, initial=0.01, maximum=0.02, jitter=0.0, backpressure=0.1),
                    poll_timeout=0.0)
    bad = oru(filler="BAD1", status="F", when="20260110120000+0100", text="x")
    store.land(bad, content_type=CONTENT_HL7V2, source="test", headers={})
    while worker.run_once(timeout=0.0):
        pass
    sink.close()
    assert store.counts()["failed"] == 1
    (sidecar,) = [json.loads(p.read_text()) for p in (tmp_path / "dlq").glob("*.json")]
    assert sidecar["error_class"] == "FhirRejected"
    assert sidecar["reason"].startswith("FHIR POST /: HTTP 400 ")
    assert "DiagnosticReport.subject" in sidecar["reason"] and "\n" not in sidecar["reason"]  # trimmed diagnostics
    outcome = sidecar["details"]["operation_outcome"]
    assert sidecar["details"]["http_status"] == 400 and outcome["resourceType"] == "OperationOutcome"
    assert (tmp_path / "dlq" / sidecar["payload_file"]).read_bytes() == bad
    assert search(fhir.url, "DiagnosticReport") == []  # the transaction was refused as a whole
    store.close()


def test_engine_validate_reads_the_capability_statement(fhir: HapiServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_BASE_URL", fhir.url)
    register(Model("needs-more", "pipelines.output.rest:shape_rest",
                   needs=(*TRANSACTION, "system:batch", "DocumentReference:update", "NoSuchType:update")))
    for model, expected in (("document", 0), ("rest", 0), ("needs-more", 2)):
        config = yaml.safe_load((REPO / "config" / "rest.yaml").read_text())
        config["sinks"]["fhir"]["model"] = model
        config["store"]["path"] = str(tmp_path / "store")
        path = tmp_path / f"{model}.yaml"
        path.write_text(yaml.safe_dump(config))
        assert engine_main(["validate", "--config", str(path)]) == expected
    gaps = capsys.readouterr().err.strip().splitlines()
    assert gaps == [
        "engine validate: FHIR server lacks system:batch: the server does not declare it (model needs-more)",
        "engine validate: FHIR server lacks NoSuchType:update: the server does not list resource type NoSuchType "
        "(model needs-more)",
    ]


class _Recording(FhirClient):
    """The real client; every request body is also written to ``folder`` (what went on the wire)."""

    def __init__(self, settings: FhirSettings, folder: Path) -> None:
        super().__init__(settings)
        self.folder = folder
        self.count = 0
        self.prefix = settings.model

    def request(self, method: str, url: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> dict[str, Any]:
        if body is not None:
            self.count += 1
            (self.folder / f"{self.prefix}-{self.count:03d}-{body.get('type', body['resourceType'])}.json").write_text(
                json.dumps(body))
        return super().request(method, url, body, params)


def test_every_unit_sent_passes_the_official_validator(fhir: HapiServer, tmp_path: Path) -> None:
    if not VALIDATOR.is_file():
        pytest.skip("official validator not present")
    sent = tmp_path / "sent"
    sent.mkdir()
    reports = [*version_sequence(filler="VAL1"),
               oru(filler="VAL2", status="F", when="20260108100000+0100", text="Second report, same patient.",
                   study_uid="2.25.1000002"),
               SR_SAMPLE.read_bytes()]  # a TID 1500 measurement report: ImagingSelections, measurement groups
    for model in ("document", "rest"):
        fhir.expunge()  # one model per server, as deployed
        settings = FhirSettings.from_mapping({"model": model, "validate": True}, {"FHIR_BASE_URL": fhir.url})
        sink = FhirSink(settings, _Recording(settings, sent))
        converter = Converter(model=model)
        for message in reports:
            for output in converter.convert(message).outputs:
                sink.write(output, Envelope("t", message, CONTENT_HL7V2, "test", 0.0))  # the envelope is not sent
                sink.flush()
        sink.close()
    files = sorted(sent.iterdir())
    assert len(files) == 24  # per model and report version: the document Bundle, then the transaction
    run = subprocess.run([str(VALIDATOR), str(sent)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"{len(files)} files, 0 with unwaived errors" in run.stdout + run.stderr


# --- harmonized (approach 3) and IMR (RAD-141) through `engine run` -------------------------------------------------

#: the sender profile of tests/models/oru_factory.py (its accession issuer is the SR's Issuer of Accession Number)
_TEST_HOSPITAL = {"senders": [{"name": "test-hospital", "sending_facility": "Test Hospital",
                               "accession_system": ACCESSION_SYSTEM}]}
_TYPES = ("Patient", "ImagingStudy", "ServiceRequest", "DiagnosticReport", "Composition", "Observation",
          "Organization", "Practitioner", "PractitionerRole", "Provenance", "ImagingSelection", "Device")


def test_engine_run_harmonized(fhir: HapiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(tmp_path, fhir.url, "harmonized", monkeypatch, mapping=_TEST_HOSPITAL)
    versions = [hoc.oru(obr25="P", obx11="P", text="Preliminary read.", obr22="20250101110000+0100"),
                hoc.oru(),
                hoc.oru(obr25="C", obx11="C", text="Corrected: 4 mm nodule.", obr22="20250102090000+0100")]
    second = hoc.oru(filler="FI-2", accession="A-2", study_uid="1.2.3.4.5", control="2", birth="", sex="")
    sr = (TESTDATA / hoc.SR_FILE).read_bytes()
    engine.start()
    try:
        send_mllp(engine, [*versions, second])  # P, F, C; another report of the same patient, thinner demographics
        wait_for(lambda: finished(tmp_path) == 4, 90, "P, F, C and the second report published")
        before = snapshot(fhir.url, _TYPES)
        send_mllp(engine, [*versions, second])  # resend of everything, the old versions first
        wait_for(lambda: finished(tmp_path) == 8, 120, "resends published")
        assert store_counts(tmp_path) == {"published": 8}, engine.log_tail()
        assert snapshot(fhir.url, _TYPES) == before  # nothing new, no new version (P and F are stale)

        (engine.config.inbox / "sr.json").write_bytes(sr)  # the DICOM SR of the first report's accession
        wait_for(lambda: finished(tmp_path) == 9, 90, "the SR published")
        patients = search(fhir.url, "Patient")  # two reports and the SR of one patient: one Patient
        assert len(patients) == 1 and patients[0]["birthDate"] == "1967-07-01"
        (study,) = search(fhir.url, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{hoc.STUDY_UID}")
        assert len(search(fhir.url, "ImagingStudy")) == 2  # the second report's study is another one
        (order,) = search(fhir.url, "ServiceRequest", identifier=f"{ACCESSION_SYSTEM}|{hoc.ACCESSION}")
        on_order = search(fhir.url, "DiagnosticReport", **{"based-on": f"ServiceRequest/{order['id']}"})
        assert len(on_order) == 2  # the ORU's and the SR's report on the one order
        (dr,) = [r for r in on_order if r["identifier"][0]["value"] == "FI-9001"]
        assert dr["status"] == "corrected" and history_total(fhir.url, f"DiagnosticReport/{dr['id']}") == 3
        composition = next(c for c in search(fhir.url, "Composition") if c["identifier"][0]["value"] == "FI-9001")
        assert history_total(fhir.url, f"Composition/{composition['id']}") == 3
        before = snapshot(fhir.url, _TYPES)
        (engine.config.inbox / "sr-again.json").write_bytes(sr)
        wait_for(lambda: finished(tmp_path) == 10, 90, "the SR resend published")
        send_mllp(engine, [*versions, second])  # the ORUs again after the SR: the SR's Patient stays
        wait_for(lambda: finished(tmp_path) == 14, 120, "resends after the SR published")
        assert store_counts(tmp_path) == {"published": 14}, engine.log_tail()
        assert snapshot(fhir.url, _TYPES) == before

        send_mllp(engine, [hoc.oru(text=None, impression=None, obr25="X", control="3"),  # status-only: cancel
                           hoc.oru(text=None, impression=None, obr25="S", control="4", accession="NONE-1",
                                   study_uid="1.2.3.999")])  # status-only for an unknown order: 404 PATCH entries
        wait_for(lambda: finished(tmp_path) == 16, 90, "status-only messages published")
        assert store_counts(tmp_path) == {"published": 16}, engine.log_tail()
        assert search(fhir.url, "ServiceRequest", identifier=f"{ACCESSION_SYSTEM}|{hoc.ACCESSION}")[0]["status"] \
            == "revoked"
        assert search(fhir.url, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{hoc.STUDY_UID}")[0]["status"] \
            == "cancelled"
        after = snapshot(fhir.url, _TYPES)
        assert set(after) == set(before)  # nothing created; only the order and the study changed
        assert {k for k in after if after[k] != before[k]} == {f"ServiceRequest/{order['id']}",
                                                                f"ImagingStudy/{study['id']}"}
        assert list((tmp_path / "dlq").glob("*.json")) == []
    finally:
        code = engine.terminate()
    assert code == 0, engine.log_tail()


def test_engine_run_imr(fhir: HapiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wado = "https://pacs.test-hospital.example/dicom-web"
    mapping = {**_TEST_HOSPITAL, "models": {"imr": {"wado_rs": {"default": wado}}}}
    report = hoc.oru()
    with httpx.Client(base_url=fhir.url, timeout=120, headers={"Accept": FHIR_JSON}) as client:
        ids = _precreate_participants(client, one_bundle(report, "imr"))  # IMR references, never creates them
    engine = engine_for(tmp_path, fhir.url, "imr", monkeypatch, mapping=mapping)
    engine.start()
    try:
        send_mllp(engine, [report])
        wait_for(lambda: finished(tmp_path) == 1, 90, "the IMR report published")
        assert store_counts(tmp_path) == {"published": 1}, engine.log_tail()
        (dr,) = search(fhir.url, "DiagnosticReport")
        assert dr["subject"]["reference"] == ids["Patient"]
        assert dr["performer"][0]["reference"] == ids["Organization"]
        assert dr["resultsInterpreter"][0]["reference"] == ids["Practitioner"]
        (endpoint,) = search(fhir.url, "Endpoint")
        assert endpoint["address"] == wado  # mapping.models.imr.wado_rs
        (study,) = search(fhir.url, "ImagingStudy")
        assert study["endpoint"][0]["reference"] == f"Endpoint/{endpoint['id']}"
        before = snapshot(fhir.url, (*_TYPES, "Endpoint"))
        send_mllp(engine, [report])  # resend: conditional creates match, nothing new
        wait_for(lambda: finished(tmp_path) == 2, 90, "the resend published")
        assert store_counts(tmp_path) == {"published": 2}, engine.log_tail()
        assert snapshot(fhir.url, (*_TYPES, "Endpoint")) == before
        assert len(search(fhir.url, "Patient")) == 1
    finally:
        code = engine.terminate()
    assert code == 0, engine.log_tail()
