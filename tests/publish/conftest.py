"""Fixtures for the FHIR publisher tests: the session's one real HAPI FHIR R5 server (fixture ``hapi`` in
tests/conftest.py, tests/fhir_server.py), emptied with ``$expunge`` before each test that uses it. Unavailable: skip
locally, fail when CI=true."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fhir_server import HapiServer
from tests.runtime.runtime_harness import EngineConfig, EngineProcess, MllpClient, ack_code


@pytest.fixture
def fhir(hapi: HapiServer) -> HapiServer:
    """The session's server, empty."""
    hapi.expunge()
    return hapi


def search(base: str, rtype: str, **params: str) -> list[dict[str, Any]]:
    """Every resource of a search (follows ``next`` links)."""
    found: list[dict[str, Any]] = []
    page = httpx.get(f"{base}/{rtype}", params={"_count": "200", **params}, timeout=60).json()
    while True:
        found += [e["resource"] for e in page.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
        nxt = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
        if not nxt:
            return found
        page = httpx.get(nxt, timeout=60).json()


def snapshot(base: str, types: tuple[str, ...] = (
        "Bundle", "DocumentReference", "Composition", "DiagnosticReport", "Patient", "ImagingStudy",
        "ServiceRequest", "Observation", "Organization", "Practitioner", "PractitionerRole")) -> dict[str, str]:
    """``Type/id`` -> versionId of everything on the server."""
    return {f"{t}/{r['id']}": r["meta"]["versionId"] for t in types for r in search(base, t)}


def history_total(base: str, ref: str) -> int:
    return int(httpx.get(f"{base}/{ref}/_history", params={"_summary": "count"}, timeout=60).json()["total"])


def store_counts(root: Path) -> dict[str, int]:
    db = root / "store" / "messages.db"
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall())


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def engine_for(tmp_path: Path, url: str, model: str, monkeypatch: pytest.MonkeyPatch,
               mapping: dict[str, Any] | None = None) -> EngineProcess:
    """``engine run`` publishing ``model`` to ``url`` (gate on), with an optional ``mapping`` section."""
    monkeypatch.setenv("FHIR_BASE_URL", url)
    config = EngineConfig(tmp_path, extra={
        **({"mapping": mapping} if mapping else {}),
        "sinks": {"fhir": {"model": model, "validate": True, "concurrency": 2},
                  "folder": {"path": str(tmp_path / "outbox")}},
        "worker": {"poll_timeout": 0.2, "drain_timeout": 10,
                   "retry": {"attempts": 2, "initial": 0.05, "maximum": 0.2, "jitter": 0.01, "backpressure": 0.5}},
    })
    return EngineProcess(config)


def send_mllp(engine: EngineProcess, messages: list[bytes]) -> None:
    client = MllpClient(engine.config.mllp_port)
    try:
        for message in messages:
            assert ack_code(client.send(message)) in ("AA", "CA")
    finally:
        client.close()


def finished(root: Path) -> int:
    counts = store_counts(root)
    return counts.get("published", 0) + counts.get("failed", 0)
