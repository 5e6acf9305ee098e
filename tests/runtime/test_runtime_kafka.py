"""``engine run`` with the Kafka deployment wiring (raw topic as the store) against a real broker:
MLLP in -> raw topic -> worker -> output topic, rejected messages -> ``<raw topic>.dlq``; SIGTERM exits 0.

The broker comes from tests/kafka_broker.py (real Apache Kafka, or KAFKA_BOOTSTRAP); unavailable => skip
locally, failure when CI=true.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from tests.kafka.kafka_helpers import create_topics, read_topic
from tests.runtime.runtime_harness import EngineConfig, EngineProcess, MllpClient, ack_code

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_engine_run_with_kafka(tmp_path: Path, bootstrap: str, scout_messages: list[Path]) -> None:
    tag = uuid.uuid4().hex[:8]
    kafka: dict[str, Any] = {
        "bootstrap_servers": [bootstrap],
        "hl7_topic": f"r{tag}.raw.hl7",
        "dicom_topic": f"r{tag}.raw.dicom",
        "consume": ["hl7"],
        "output_topic": f"r{tag}.fhir",
        "group_id": f"g{tag}",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        create_topics(admin, {kafka["hl7_topic"]: 1, kafka["output_topic"]: 1, f"{kafka['hl7_topic']}.dlq": 1})
    finally:
        admin.close()
    cfg = EngineConfig(tmp_path)
    cfg.extra = {
        "kafka": kafka,
        "store": None,
        "sources": {"mllp": {"host": "127.0.0.1", "port": cfg.mllp_port}, "kafka": {}},
        "sinks": {"kafka": {}},
        "dlq": {"kafka": {}},
    }
    engine = EngineProcess(cfg)
    try:
        engine.start(timeout=60)
        good = scout_messages[1].read_bytes()
        # a report that cannot be converted (no PID): a dead letter (status-only ORUs are filtered, not dead)
        rejected = b"\r".join(s for s in good.replace(b"\n", b"\r").split(b"\r") if s and not s.startswith(b"PID"))
        client = MllpClient(cfg.mllp_port, timeout=30)
        assert ack_code(client.send(good)) == "AA"  # acknowledged after the raw topic acknowledged (acks=all)
        assert ack_code(client.send(scout_messages[5].read_bytes())) == "AR"  # stored, not a report: filtered
        assert ack_code(client.send(rejected)) == "AE"  # stored, conversion failed: dead letter
        client.close()
        [expected] = Converter(load_mapping_context(None)).convert(good).outputs

        outputs = read_topic(bootstrap, kafka["output_topic"], expect=1, timeout=60)
        assert [r.value for r in outputs] == [expected.body]
        dead = read_topic(bootstrap, f"{kafka['hl7_topic']}.dlq", expect=1, timeout=60)
        assert [r.value for r in dead] == [rejected]
        time.sleep(0.5)
        assert engine.terminate(timeout=60) == 0
        assert not (tmp_path / "store").exists()  # with Kafka the raw topic is the store
    finally:
        engine.stop_quietly()
