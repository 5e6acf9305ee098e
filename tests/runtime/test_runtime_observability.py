"""Health endpoints, JSON logs without PHI, and the runtime's loud stop on an unexpected error."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import yaml

from engine.convert import Output
from engine.observability.health import HealthServer
from engine.observability.logging import JsonFormatter
from engine.observability.metrics import Heartbeat, Metrics
from engine.runtime import EXIT_CRASHED, Runtime
from engine.settings import load_settings
from engine.sources.base import CONTENT_HL7V2, Envelope
from engine.store import MessageStore
from tests.runtime.runtime_harness import REPO, EngineConfig, http_get


def test_health_endpoints() -> None:
    heartbeat, metrics = Heartbeat(), Metrics()
    state = {"listener": True}
    server = HealthServer("127.0.0.1", 0, metrics, heartbeat, {"listener": lambda: state["listener"]}, live_timeout=1.0)
    server.add_check("broken", lambda: 1 / 0 == 0)  # a probe that raises means "not ready"
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        metrics.retries.inc()
        assert http_get(base + "/livez")[0] == 200
        status, body = http_get(base + "/readyz")
        assert status == 503 and json.loads(body)["checks"] == {"listener": True, "broken": False}
        server._checks.pop("broken")
        assert http_get(base + "/readyz")[0] == 200
        state["listener"] = False
        assert http_get(base + "/readyz")[0] == 503
        heartbeat._last -= 5  # the main loop stopped ticking
        status, body = http_get(base + "/livez")
        assert status == 503 and json.loads(body)["status"] == "stale"
        status, body = http_get(base + "/metrics")
        assert status == 200 and b"engine_retries_total 1.0" in body
        assert http_get(base + "/nope")[0] == 404
    finally:
        server.stop()


def test_json_formatter_keeps_ids_and_drops_everything_else() -> None:
    record = logging.LogRecord("engine.worker", logging.INFO, __file__, 1, "published", None, None)
    record.envelope_id = "12"
    record.control_id = "CTRL-1"
    record.patient_name = "DOE^JANE"  # not allow-listed: never emitted
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "published" and line["envelope_id"] == "12" and line["control_id"] == "CTRL-1"
    assert "patient_name" not in line and "DOE" not in json.dumps(line)
    data = "report text: large mass in " + record.patient_name
    try:
        raise ValueError(data)
    except ValueError:
        record = logging.LogRecord("engine", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["exception"] == "ValueError" and "raise ValueError(data)" in line["traceback"]
    assert "DOE" not in json.dumps(line)  # exception messages may quote data: never logged


def test_local_config_carries_the_sender_profiles() -> None:
    local = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    senders = yaml.safe_load((REPO / "config" / "mapping-senders.yaml").read_text())
    assert local["mapping"] == senders["mapping"]


class ExplodingSink:
    name = "exploding"

    def write(self, output: Output, envelope: Envelope) -> None:
        raise RuntimeError("a bug")

    def flush(self) -> None: ...

    def close(self) -> None: ...


def test_unexpected_error_stops_runtime_loudly(tmp_path: Path, scout_messages: list[Path], caplog) -> None:  # type: ignore[no-untyped-def]
    cfg = EngineConfig(tmp_path)
    cfg.extra = {"sources": {"inbox": {"path": str(tmp_path / "in")}}}
    settings = load_settings(cfg.write())
    store = MessageStore(tmp_path / "store" / "messages.db")
    eid = store.land(scout_messages[1].read_bytes(), content_type=CONTENT_HL7V2, source="test", headers={})
    store.close()

    class Crashing(Runtime):
        def _build(self) -> None:
            super()._build()
            assert self.worker is not None
            self.worker.sinks = [ExplodingSink()]

    with caplog.at_level(logging.CRITICAL):
        assert Crashing(settings).run(install_signals=False) == EXIT_CRASHED
    assert any("unexpected error" in r.getMessage() for r in caplog.records)
    store = MessageStore(tmp_path / "store" / "messages.db")
    message = store.get(eid)
    assert message is not None and message.status == "mapped"  # left unfinished for resume
    store.close()
