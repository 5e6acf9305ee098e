"""Secure defaults: `engine validate` refuses listeners reachable from other machines without TLS or an
allow-list unless the source says `insecure: true`; a TLS listener on all interfaces validates and serves."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.settings import load_settings
from tests.runtime.runtime_harness import REPO, EngineConfig, EngineProcess


def _validate(tmp_path: Path, sources: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = {
        "store": {"path": str(tmp_path / "store")},
        "sources": sources,
        "sinks": {"folder": {"path": str(tmp_path / "out")}},
        "dlq": {"folder": {"path": str(tmp_path / "dlq")}},
    }
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "engine", "validate", "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"mllp": {"host": "0.0.0.0"}}, "sources.mllp: mllp.host: 0.0.0.0 is reachable from other machines"),
        ({"mllp": {"host": "::"}}, "mllp.host: :: is reachable"),
        ({"dicom": {"host": "192.168.10.20"}}, "dicom.host: 192.168.10.20 is reachable"),
        ({"dicom": {"host": "engine.example.org"}}, "dicom.host: engine.example.org is reachable"),
    ],
)
def test_validate_refuses_exposed_listeners(tmp_path: Path, sources: dict[str, Any], message: str) -> None:
    result = _validate(tmp_path, sources)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "insecure: true" in result.stderr  # the way out is named


@pytest.mark.parametrize(
    "sources",
    [
        {"mllp": {"host": "0.0.0.0", "insecure": True}, "dicom": {"host": "::", "insecure": True}},
        {"mllp": {"host": "0.0.0.0", "allowed_peers": ["10.0.0.0/8"]}},
        {"dicom": {"host": "0.0.0.0", "allowed_calling_aes": ["CT1"]}},
        {"mllp": {"host": "localhost"}, "dicom": {"host": "127.0.0.2"}},
    ],
)
def test_validate_accepts_protected_listeners(tmp_path: Path, sources: dict[str, Any]) -> None:
    result = _validate(tmp_path, sources)
    assert result.returncode == 0, result.stderr


def test_tls_listener_on_all_interfaces_validates_and_answers(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """The README's TLS example: MLLP with a certificate on 0.0.0.0, no `insecure` needed."""
    cert, key = tls_files
    cfg = EngineConfig(tmp_path)
    cfg.extra = {
        "sources": {
            "mllp": {"host": "0.0.0.0", "port": cfg.mllp_port, "tls": {"cert": str(cert), "key": str(key)}},
            "dicom": {"host": "0.0.0.0", "port": cfg.dicom_port, "tls": {"cert": str(cert), "key": str(key)}},
        }
    }
    engine = EngineProcess(cfg)
    load_settings(engine.config_path)  # validates
    engine.start()
    try:
        message = b"MSH|^~\\&|ADT|HOSP|ENGINE|HUB|20250101120000||ADT^A01^ADT_A01|TLS-1|P|2.5.1\rPID|1||X\r"
        ctx = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", cfg.mllp_port)) as raw, ctx.wrap_socket(
            raw, server_hostname="localhost"
        ) as sock:
            sock.sendall(b"\x0b" + message + b"\x1c\r")
            sock.settimeout(10)
            answer = b""
            while not answer.endswith(b"\x1c\r"):
                answer += sock.recv(4096)
        assert b"MSA|AR|TLS-1|" in answer  # stored, answered over TLS: an ADT is not a report we convert
    finally:
        assert engine.terminate() == 0
