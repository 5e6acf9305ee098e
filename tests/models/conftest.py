"""One real HAPI FHIR R5 server per test session (../shared/tools/hapi-fhir-r5/run.sh --port 0), emptied with
``$expunge`` before every test that uses it. ``HAPI_FHIR_BASE_URL`` reuses an already running server.
Unavailable: skip locally, fail under CI."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import SHARED

_EXPUNGE = {"resourceType": "Parameters", "parameter": [{"name": "expungeEverything", "valueBoolean": True}]}
FHIR_JSON = "application/fhir+json"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"HAPI FHIR R5 server unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"HAPI FHIR R5 server unavailable: {reason}")


@pytest.fixture(scope="session")
def hapi_base() -> Iterator[str]:
    url = os.environ.get("HAPI_FHIR_BASE_URL")
    if url:
        yield url.rstrip("/")
        return
    run = SHARED / "tools" / "hapi-fhir-r5" / "run.sh"
    if not run.is_file():
        _unavailable(f"{run} not found")
    log = tempfile.NamedTemporaryFile(prefix="hapi-r5-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([str(run), "--port", "0"], stdout=subprocess.PIPE, stderr=log, text=True)
    ready: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready "):
                ready.append(line.split()[1])
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=float(os.environ.get("HAPI_START_TIMEOUT", "600")))
    if not ready:
        proc.terminate()
        proc.wait(timeout=30)
        _unavailable(f"no ready line (log: {log.name})")
    try:
        yield ready[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def fhir(hapi_base: str) -> Iterator[Any]:
    """An httpx client on the empty server."""
    import httpx

    with httpx.Client(base_url=hapi_base, timeout=120, headers={"Accept": FHIR_JSON}) as client:
        r = client.post("/$expunge", json=_EXPUNGE, headers={"Content-Type": FHIR_JSON})
        assert r.status_code == 200, r.text
        yield client
