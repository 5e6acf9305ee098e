"""``engine run`` as a real subprocess: MLLP, C-STORE and inbox in; Bundles and dead letters out;
/livez /readyz /metrics over HTTP; SIGTERM shuts down cleanly; JSON logs carry ids but no PHI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from engine.sources.dicom_scp import STATUS_NOT_A_REPORT
from tests.runtime.runtime_harness import (
    REPO,
    TESTDATA,
    EngineConfig,
    EngineProcess,
    MllpClient,
    ack_code,
    http_get,
    json_lines,
)

SR_FILE = TESTDATA / "dicom-sr-orthanc-tests" / "StructuredReports-IM0.dcm"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    proc = EngineProcess(EngineConfig(tmp_path))
    yield proc
    proc.stop_quietly()


def _wait_for(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _field(message: bytes, segment: bytes, index: int) -> bytes:
    for line in message.replace(b"\n", b"\r").split(b"\r"):
        if line.startswith(segment + b"|"):
            return line.split(b"|")[index]
    return b""


def test_service_end_to_end(engine: EngineProcess, scout_messages: list[Path]) -> None:
    cfg = engine.config
    engine.start()
    base = f"http://127.0.0.1:{cfg.health_port}"
    status, body = http_get(base + "/livez")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = http_get(base + "/readyz")
    checks = json.loads(body)["checks"]
    assert status == 200 and {"mllp", "dicom", "inbox", "store", "sink:folder", "sink:dlq-folder"} <= set(checks)

    good, filtered, for_inbox = (scout_messages[i].read_bytes() for i in (1, 5, 2))
    rejected = scout_messages[3].read_bytes().rstrip(b"\r\n") + b"\rNTE|1||\x00\x00\r"  # NUL bytes: ParseError
    converter = Converter(load_mapping_context(None))  # the sender profiles `engine run` loads by default
    [expected] = converter.convert(good).outputs

    client = MllpClient(cfg.mllp_port)
    assert ack_code(client.send(good)) == "AA"
    assert ack_code(client.send(filtered)) == "AR"  # stored; a status-only ORU is not a report we convert
    assert ack_code(client.send(rejected)) == "AE"  # stored; conversion failed, the dead letter is kept
    client.close()
    out_file = cfg.outbox / f"{expected.bundle_id}.json"
    assert _wait_for(out_file.exists)
    assert out_file.read_bytes() == expected.body
    assert _wait_for(lambda: len(list(cfg.dlq.glob("*.json"))) == 1)
    [sidecar_path] = cfg.dlq.glob("*.json")
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["source"] == "mllp" and sidecar["error_class"] == "ParseError"
    assert (cfg.dlq / sidecar["payload_file"]).read_bytes() == rejected

    (cfg.inbox / "dropped.hl7.part").write_bytes(for_inbox)
    (cfg.inbox / "dropped.hl7.part").rename(cfg.inbox / "dropped.hl7")
    [inbox_out] = converter.convert(for_inbox).outputs
    assert _wait_for(lambda: (cfg.inbox / "done" / "dropped.hl7").exists())
    assert (cfg.outbox / f"{inbox_out.bundle_id}.json").read_bytes() == inbox_out.body

    ds = pydicom.dcmread(SR_FILE)
    ae = AE(ae_title="LOSSTEST")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", cfg.dicom_port, ae_title="ENGINE")
    assert assoc.is_established
    result = assoc.send_c_store(ds)
    assoc.release()
    assert result.Status == STATUS_NOT_A_REPORT  # stored; an OsiriX annotation store is not a report (ack: converted)
    # the SR lands and is either published or dead-lettered (while the SR pipeline is being built)
    assert _wait_for(lambda: json.loads(subprocess.run(
        [sys.executable, "-m", "engine", "status", "--config", str(engine.config_path)],
        capture_output=True, text=True, cwd=REPO, check=True).stdout)["unfinished"] == 0)

    status, metrics = http_get(base + "/metrics")
    assert status == 200
    text = metrics.decode()
    assert 'engine_messages_received_total{source="mllp"} 3.0' in text
    assert 'engine_ingress_outcomes_total{outcome="filtered",source="mllp"} 1.0' in text
    assert 'engine_messages_received_total{source="inbox"} 1.0' in text
    assert 'engine_messages_received_total{source="dicom"} 1.0' in text
    assert "engine_processing_seconds_bucket" in text

    report = json.loads(subprocess.run(
        [sys.executable, "-m", "engine", "status", "--config", str(engine.config_path)],
        capture_output=True, text=True, cwd=REPO, check=True).stdout)
    assert report["total"] == 5 and report["unfinished"] == 0
    assert report["counts"]["failed"] == 1
    assert report["counts"]["filtered"] == sum(report["filtered_by_reason"].values()) >= 1

    assert engine.terminate() == 0
    # `engine map` with the same config writes byte-identical files
    (cfg.root / "good.hl7").write_bytes(good)
    mapped = subprocess.run(
        [sys.executable, "-m", "engine", "map", "--config", str(engine.config_path), "--out", str(cfg.root / "map"),
         str(cfg.root / "good.hl7")], capture_output=True, cwd=REPO, check=False)
    assert mapped.returncode == 0, mapped.stderr
    assert (cfg.root / "map" / out_file.name).read_bytes() == out_file.read_bytes()
    records = json_lines(engine.log_lines())  # every line is JSON
    messages = [r["msg"] for r in records]
    assert "engine running" in messages and "engine stopped" in messages
    assert any(r.get("bundle_id") == expected.bundle_id and r.get("control_id") for r in records)
    log_text = engine.log_path.read_text()
    for sample in (good, filtered, rejected, for_inbox):
        name = _field(sample, b"PID", 5).split(b"^")[0]
        assert name and name.decode() not in log_text  # no patient names in the logs
        obx_text = _field(sample, b"OBX", 5)
        if len(obx_text) > 12:
            assert obx_text[:40].decode(errors="ignore") not in log_text  # no report text


def test_restart_resumes_and_replay_republishes(engine: EngineProcess, scout_messages: list[Path]) -> None:
    cfg = engine.config
    engine.start()
    client = MllpClient(cfg.mllp_port)
    assert ack_code(client.send(scout_messages[1].read_bytes())) == "AA"
    client.close()
    [out] = Converter(load_mapping_context(None)).convert(scout_messages[1].read_bytes()).outputs
    target = cfg.outbox / f"{out.bundle_id}.json"
    assert _wait_for(target.exists)
    assert engine.terminate() == 0
    target.unlink()

    replay = subprocess.run(
        [sys.executable, "-m", "engine", "replay", "--config", str(engine.config_path), "--since", "2000-01-01"],
        capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(replay.stdout) == {"requeued": 1}
    engine.start()  # the re-queued message is picked up at start
    assert _wait_for(target.exists)
    assert target.read_bytes() == out.body
    assert sorted(p.name for p in cfg.outbox.iterdir()) == [target.name]

    target.unlink()  # replay while the engine runs: picked up within a poll interval
    [envelope_id] = {r["envelope_id"] for r in json_lines(engine.log_lines()) if r["msg"] == "published"}
    replay = subprocess.run(
        [sys.executable, "-m", "engine", "replay", "--config", str(engine.config_path), "--id", envelope_id],
        capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(replay.stdout) == {"requeued": 1}
    assert _wait_for(target.exists)
    assert target.read_bytes() == out.body
    assert engine.terminate() == 0


def test_port_in_use_fails_to_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = EngineConfig(tmp_path, mllp_port=busy.getsockname()[1])
        engine = EngineProcess(cfg)
        engine.start(wait=False)
        assert engine.proc is not None
        assert engine.proc.wait(30) == 2
    assert any(r["msg"] == "cannot start" for r in json_lines(engine.log_lines()))


def test_second_engine_on_the_same_store_refuses_to_start(engine: EngineProcess) -> None:
    engine.start()
    second = EngineProcess(EngineConfig(engine.config.root))  # same store, other ports
    second.log_path = engine.config.root / "second.log"
    second.start(wait=False)
    assert second.proc is not None and second.proc.wait(30) == 2
    [failure] = [r for r in json_lines(second.log_lines()) if r["msg"] == "cannot start"]
    assert "another engine is already running" in failure["reason"]
    assert engine.terminate() == 0


def test_unwritable_outbox_means_backpressure_not_dead_letters(tmp_path: Path, scout_messages: list[Path]) -> None:
    cfg = EngineConfig(tmp_path)
    cfg.extra = {"worker": {"poll_timeout": 0.2, "retry": {"attempts": 2, "initial": 0.05, "backpressure": 0.3}}}
    engine = EngineProcess(cfg)
    try:
        engine.start()
        base = f"http://127.0.0.1:{cfg.health_port}"
        cfg.outbox.rmdir()
        cfg.outbox.write_bytes(b"")  # the outbox is now a file: every write fails with OSError
        client = MllpClient(cfg.mllp_port)
        assert ack_code(client.send(scout_messages[1].read_bytes())) == "AA"  # intake still stores and ACKs
        client.close()
        assert _wait_for(lambda: b"engine_backpressure_total 2.0" in http_get(base + "/metrics")[1])
        assert http_get(base + "/readyz")[0] == 503
        assert http_get(base + "/livez")[0] == 200  # paused, not stuck
        cfg.outbox.unlink()
        cfg.outbox.mkdir()  # the disk is back
        [out] = Converter(load_mapping_context(None)).convert(scout_messages[1].read_bytes()).outputs
        assert _wait_for(lambda: (cfg.outbox / f"{out.bundle_id}.json").exists())
        assert _wait_for(lambda: http_get(base + "/readyz")[0] == 200)
        assert list(cfg.dlq.iterdir()) == []
        assert engine.terminate() == 0
    finally:
        engine.stop_quietly()
