"""The FHIR server stops mid-stream: the engine keeps acknowledging and storing, back-pressures (``/readyz`` 503,
nothing dead-lettered), and after the server is back on the same port every stored report arrives exactly once.

HAPI keeps its data in memory, so the restarted server is empty: what it holds afterwards is exactly what the
engine still owed it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fhir_server import HapiServer
from tests.publish.conftest import engine_for, finished, history_total, search, send_mllp, store_counts, wait_for
from tests.publish.messages import oru, version_sequence
from tests.runtime.runtime_harness import http_get

pytestmark = pytest.mark.integration


def test_outage_backpressure_then_nothing_lost_nothing_duplicated(hapi: HapiServer, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if hapi.external:
        pytest.skip("FHIR_TEST_BASE_URL: the tests do not own the server, cannot stop it")
    hapi.expunge()
    engine = engine_for(tmp_path, hapi.url, "rest", monkeypatch)
    engine.start()
    ready = f"http://127.0.0.1:{engine.config.health_port}/readyz"
    try:
        send_mllp(engine, [oru(filler="BEFORE", status="F", when="20260109090000+0100", text="Before the outage.")])
        wait_for(lambda: finished(tmp_path) == 1, 60, "first report published")

        hapi.stop()
        hapi.wait_down()
        during = [oru(filler=f"OUT{n}", status="F", when=f"2026011010{n:02d}00+0100", text=f"Report {n}.",
                      study_uid=f"2.25.20000{n}") for n in range(3)]
        during += version_sequence(filler="OUTV", study_uid="2.25.300001")[:2]  # P then F of one report
        send_mllp(engine, during)  # still acknowledged: landed in the store
        wait_for(lambda: http_get(ready, 1.0)[0] == 503, 60, "back-pressure (/readyz 503)")
        counts = store_counts(tmp_path)
        assert counts.get("published") == 1 and counts.get("failed", 0) == 0
        assert sum(counts.values()) == 6
        assert list((tmp_path / "dlq").glob("*.json")) == []

        hapi.restart()  # same port, empty (in-memory database)
        wait_for(lambda: finished(tmp_path) == 6, 180, "every stored report published after the restart")
        assert store_counts(tmp_path) == {"published": 6}, engine.log_tail()
        wait_for(lambda: http_get(ready, 1.0)[0] == 200, 30, "/readyz back to 200")
    finally:
        code = engine.terminate()
    assert code == 0, engine.log_tail()

    reports = search(hapi.url, "DiagnosticReport")
    assert sorted(r["identifier"][0]["value"] for r in reports) == ["OUT0", "OUT1", "OUT2", "OUTV"]
    docs = search(hapi.url, "DocumentReference")
    assert len(docs) == 5 and len({d["id"] for d in docs}) == 5
    assert sorted(d["status"] for d in docs) == ["current"] * 4 + ["superseded"]
    versioned = next(r for r in reports if r["identifier"][0]["value"] == "OUTV")
    assert versioned["status"] == "final" and history_total(hapi.url, f"DiagnosticReport/{versioned['id']}") == 2
    assert list((tmp_path / "dlq").glob("*.json")) == []
    assert any('"intake paused"' in line or "intake paused" in line for line in engine.log_lines())
