"""A real HAPI FHIR R5 server for the publisher tests (``../shared/tools/hapi-fhir-r5/run.sh``).

``HapiServer.start()`` runs ``run.sh --port <port>`` (0 the first time) and waits for its ``ready <url>`` line;
``stop()`` sends SIGTERM (the data is in memory and gone afterwards); ``restart()`` starts it again on the *same*
port, so an engine configured with the URL reconnects; ``expunge()`` empties it between tests.
``FHIR_TEST_BASE_URL`` (or ``HAPI_FHIR_BASE_URL``) points the tests at an already running server instead (restart
tests then skip). :func:`session_server` is the body of the one session fixture ``hapi`` (tests/conftest.py) that
every test of the suite needing a FHIR server shares.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_SH = ROOT.parent / "shared" / "tools" / "hapi-fhir-r5" / "run.sh"
START_TIMEOUT = float(os.environ.get("HAPI_START_TIMEOUT", "400"))  # a cold build takes ~2.5 min, a start ~55 s


class ServerUnavailable(RuntimeError):
    pass


class HapiServer:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = (os.environ.get("FHIR_TEST_BASE_URL") or os.environ.get("HAPI_FHIR_BASE_URL") or "").rstrip("/")
        self.external = bool(self.url)
        self.port = 0

    def start(self) -> str:
        if self.external:
            return self.url
        if not RUN_SH.is_file():
            raise ServerUnavailable(f"{RUN_SH} not found")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(RUN_SH), "--port", str(self.port)], stdout=subprocess.PIPE, stderr=log,
                                     start_new_session=True)
        log.close()
        line: list[bytes] = []

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            line.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        match = re.match(rb"ready (http://\S+)", line[0]) if line else None
        if match is None:
            self.stop()
            raise ServerUnavailable(f"HAPI did not print its ready line within {START_TIMEOUT:.0f} s "
                                    f"(log: {self.log_path})")
        self.url = match.group(1).decode()
        self.port = int(re.search(r":(\d+)/", self.url).group(1))  # type: ignore[union-attr]
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> str:
        self.stop()
        return self.start()

    def expunge(self) -> None:
        response = httpx.post(f"{self.url}/$expunge", timeout=120, json={
            "resourceType": "Parameters", "parameter": [{"name": "expungeEverything", "valueBoolean": True}]})
        response.raise_for_status()

    def wait_down(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/metadata", timeout=1.0)
            except httpx.TransportError:
                return
            time.sleep(0.2)


def session_server(log_path: Path) -> Iterator[HapiServer]:
    """Start the session's server (or use the external one); unavailable: skip locally, fail when CI=true."""
    server = HapiServer(log_path)
    t0 = time.monotonic()
    try:
        server.start()
    except ServerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"HAPI FHIR server unavailable under CI: {exc}", pytrace=False)
        pytest.skip(f"HAPI FHIR server unavailable: {exc}")
    print(f"\n[hapi] {server.url} ready in {time.monotonic() - t0:.1f}s")
    try:
        yield server
    finally:
        server.stop()
