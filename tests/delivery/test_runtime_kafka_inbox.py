"""Review finding: ``engine run`` with the Kafka raw topic as the landing *and* a ``store:`` section *and* a folder
inbox (a valid configuration: settings keep the store when the section is present).

The runtime gave the inbox ``track_completion=True`` whenever a store existed, although the landing was
Kafka: landed files went to ``.landed/<topic:partition:offset>__<name>`` and were never moved on (nothing
finishes Kafka envelopes in the store), and at the next start ``FolderInbox.recover`` asked the store for
``int("<topic>:0:0")``: ValueError, "cannot start", exit 2, until an operator cleans ``.landed/`` by hand.
Real broker (tests/kafka_broker.py), real engine subprocess.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from engine.convert import Converter
from tests.kafka.kafka_helpers import create_topics
from tests.runtime.conftest import SCOUT
from tests.runtime.runtime_harness import EngineConfig, EngineProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_inbox_with_kafka_landing_and_a_store_section(tmp_path: Path, bootstrap: str) -> None:
    scout_messages = sorted(SCOUT.glob("*.hl7"))
    tag = uuid.uuid4().hex[:8]
    kafka: dict[str, Any] = {
        "bootstrap_servers": [bootstrap],
        "hl7_topic": f"v{tag}.raw.hl7",
        "dicom_topic": f"v{tag}.raw.dicom",
        "consume": ["hl7"],
        "group_id": f"g{tag}",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        create_topics(admin, {kafka["hl7_topic"]: 1, kafka["dicom_topic"]: 1})
    finally:
        admin.close()
    cfg = EngineConfig(tmp_path)
    cfg.extra = {  # the default store section stays
        "kafka": kafka,
        "sources": {"inbox": {"path": str(cfg.inbox), "settle_seconds": 0.2, "scan_interval": 0.1}, "kafka": {}},
    }
    good = scout_messages[1].read_bytes()
    [expected] = Converter().convert(good).outputs
    engine = EngineProcess(cfg)
    try:
        engine.start(timeout=60)
        (cfg.inbox / "report.hl7").write_bytes(good)
        assert _wait(lambda: (cfg.outbox / f"{expected.bundle_id}.json").exists(), 60), engine.log_tail()
        assert _wait(lambda: (cfg.inbox / "done" / "report.hl7").exists(), 10), (
            f"inbox file not moved to done/: .landed holds {[p.name for p in (cfg.inbox / '.landed').iterdir()]}"
        )
        assert engine.terminate(timeout=60) == 0
        engine = EngineProcess(cfg)
        engine.start(timeout=60)  # restart must work
        assert engine.terminate(timeout=60) == 0
    finally:
        engine.stop_quietly()
