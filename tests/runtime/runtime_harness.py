"""Helpers for tests that run ``engine run`` as a real subprocess and talk to it over loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"  # ../shared beside the project root
SB, EB = b"\x0b", b"\x1c\x0d"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EngineConfig:
    root: Path
    mllp_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def dlq(self) -> Path:
        return self.root / "dlq"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def write(self) -> Path:
        data: dict[str, Any] = {
            "mapping": {},
            "store": {"path": str(self.root / "store")},
            "sources": {
                "mllp": {"host": "127.0.0.1", "port": self.mllp_port},
                "dicom": {"host": "127.0.0.1", "port": self.dicom_port, "ae_title": "ENGINE"},
                "inbox": {"path": str(self.inbox), "settle_seconds": 0.2, "scan_interval": 0.1},
            },
            "sinks": {"folder": {"path": str(self.outbox)}},
            "dlq": {"folder": {"path": str(self.dlq)}},
            "worker": {"poll_timeout": 0.2, "drain_timeout": 10},
            "health": {"host": "127.0.0.1", "port": self.health_port},
            "logging": {"level": "INFO", "format": "json"},
        }
        data.update(self.extra)
        for key in [k for k, v in data.items() if v is None]:
            del data[key]  # extra={"store": None} removes a section
        path = self.root / "engine.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


class EngineProcess:
    """``python -m engine run --config ...`` with stderr captured to a log file."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.config_path = config.write()
        self.log_path = config.root / "engine.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, timeout: float = 30.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("ENGINE_HEALTH_PORT", None)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--config", str(self.config_path)],
            cwd=self.config.root,
            env=env,
            stdout=log,
            stderr=log,
        )
        log.close()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited early ({self.proc.returncode}): {self.log_tail()}")
            status, _ = http_get(f"http://127.0.0.1:{self.config.health_port}/readyz", timeout=1.0)
            if status == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"engine not ready after {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(self.log_lines()[-n:])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class MllpClient:
    """A minimal persistent MLLP client: send one framed message, read one framed ACK."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def send(self, message: bytes) -> bytes:
        self.sock.sendall(SB + message + EB)
        while EB not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the ACK")
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(EB)
        return frame.lstrip(SB)

    def close(self) -> None:
        self.sock.close()


def ack_code(ack: bytes) -> str:
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA"):
            return segment.split(b"|")[1].decode()
    return ""


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.strip()]
