"""``engine run`` publishing to a real HAPI FHIR R5 server (models ``document`` and ``rest``), resends, version
sequences, a permanent 4xx into the dead letters, ``engine validate`` against the server's CapabilityStatement, and
the official validator over every unit the publisher put on the wire."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

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
from tests.fhir_server import HapiServer
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
