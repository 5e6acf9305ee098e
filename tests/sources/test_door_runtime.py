"""`engine run` end to end: rejections at the door appear in /metrics and in the dead letters, what senders
were told is counted, and refused DICOM associations are logged (real process, real sockets)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from pynetdicom import AE

from tests.runtime.runtime_harness import EngineConfig, EngineProcess, http_get
from tests.sources.source_helpers import TESTDATA

ADT = b"MSH|^~\\&|ADT|HOSP|ENGINE|HUB|20250101120000||ADT^A01^ADT_A01|DOOR-1|P|2.5.1\rPID|1||X\r"
SR = TESTDATA / "dicom-sr-dcmqi" / "sr.dcm"


def _recv(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_door_rejections_in_metrics_and_dead_letters(tmp_path: Path) -> None:
    cfg = EngineConfig(tmp_path)
    cfg.extra = {"worker": {"poll_timeout": 0.2, "drain_timeout": 10}}
    engine = EngineProcess(cfg)
    engine.start()
    try:
        with socket.create_connection(("127.0.0.1", cfg.mllp_port), timeout=10) as sock:
            sock.sendall(b"\x0b" + ADT + b"\x1c")  # no trailing CR: answered anyway
            assert b"MSA|AR|DOOR-1|" in _recv(sock)
            sock.sendall(b"\x0bnot hl7 at all\x1c\r")
            assert b"MSA|AR||not an HL7 v2 message" in _recv(sock)
        ae = AE(ae_title="INTRUDER")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.88.33")
        assert not ae.associate("127.0.0.1", cfg.dicom_port, ae_title="NOTENGINE").is_established
        deadline = time.monotonic() + 10
        text = ""
        while time.monotonic() < deadline:
            text = http_get(f"http://127.0.0.1:{cfg.health_port}/metrics")[1].decode()
            if "refused-association" in text:
                break
            time.sleep(0.2)
        assert 'engine_ingress_rejected_total{reason="not-hl7",source="mllp"} 1.0' in text
        assert 'engine_ingress_rejected_total{reason="refused-association",source="dicom"} 1.0' in text
        assert 'engine_ingress_outcomes_total{outcome="filtered",source="mllp"} 1.0' in text
    finally:
        assert engine.terminate() == 0
    sidecars = [json.loads(p.read_text()) for p in cfg.dlq.glob("*.json")]
    door = sorted(s["headers"]["door.reason"] for s in sidecars if s["error_class"] == "IngressRejected")
    assert door == ["not-hl7", "refused-association"]
    log = engine.log_path.read_text()
    assert "association refused" in log and "INTRUDER" in log and "NOTENGINE" in log
