"""One mapping configuration for every entry point (issue 11 item 5).

The WashU feed (../shared/testdata/hl7v2-washu-scout: single messages, the 900-message bulk file, raw logs,
in sub-folders) goes through ``engine map`` and through ``engine run`` (folder inbox, a config without a
``mapping:`` section, as shipped configs are written): the Bundles must be byte-identical. The Kafka deployment
(config/kafka.yaml) must load the same sender profiles, so the WashU feed keeps its accession there too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from engine.settings import load_settings
from tests.runtime.runtime_harness import REPO, EngineConfig, EngineProcess
from tests.sources.source_helpers import TESTDATA

WASHU = TESTDATA / "hl7v2-washu-scout"


def test_washu_feed_engine_map_and_engine_run_write_identical_bundles(tmp_path: Path) -> None:
    mapped = tmp_path / "map"
    result = subprocess.run(
        [sys.executable, "-m", "engine", "map", "--quiet", "--out", str(mapped), str(WASHU)],
        capture_output=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    expected = {p.name: p.read_bytes() for p in mapped.glob("*.json") if p.name != "summary.json"}
    assert len(expected) > 800

    cfg = EngineConfig(tmp_path / "run")
    cfg.root.mkdir()
    cfg.extra = {"mapping": None, "worker": {"poll_timeout": 0.2, "drain_timeout": 10, "batch_size": 500}}
    engine = EngineProcess(cfg)
    assert "mapping" not in yaml.safe_load(engine.config_path.read_text())  # no mapping section at all
    engine.start()
    try:
        shutil.copytree(WASHU, cfg.inbox / "washu", dirs_exist_ok=True)  # sub-folders: read recursively
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            pending = [p for p in (cfg.inbox / "washu").rglob("*") if p.is_file()]
            landed = list((cfg.inbox / ".landed").iterdir())
            if not pending and not landed:
                break
            time.sleep(0.3)
        assert engine.terminate(timeout=60) == 0
    finally:
        engine.stop_quietly()
    written = {p.name: p.read_bytes() for p in cfg.outbox.glob("*.json")}
    assert written.keys() == expected.keys()
    assert [n for n in expected if written[n] != expected[n]] == []  # byte for byte
    reports = list((cfg.inbox / "done").rglob("*.report.json"))
    assert reports and all(json.loads(p.read_text())["counts"].get("converted") for p in reports)
    accessions = [json.loads(body) for body in list(written.values())[:50]]
    assert any("ABCHOSP/accession" in json.dumps(b) for b in accessions)  # the sender profile applied


def test_every_shipped_config_loads_the_shipped_sender_profiles() -> None:
    shipped = load_mapping_context(None)
    assert shipped.senders, "config/mapping-senders.yaml defines sender profiles"
    for name in ("local.yaml", "docker.yaml", "kafka.yaml"):
        settings = load_settings(REPO / "config" / name, environ={})
        assert settings.mapping == shipped, name
    sample = sorted((WASHU / "messages").glob("*.hl7"))[2].read_bytes()
    kafka = load_settings(REPO / "config" / "kafka.yaml", environ={})
    [via_kafka] = Converter(kafka.mapping).convert(sample).outputs
    [via_map] = Converter(load_mapping_context(None)).convert(sample).outputs
    assert via_kafka.body == via_map.body and b"ABCHOSP/accession" in via_kafka.body


class ShippedKafkaConfig(EngineConfig):
    """config/kafka.yaml as shipped (no `mapping:` section), pointed at the test broker, plus a folder inbox."""

    bootstrap: str = ""
    tag: str = ""

    def write(self) -> Path:
        data = yaml.safe_load((REPO / "config" / "kafka.yaml").read_text())
        assert "mapping" not in data
        data["kafka"].update(
            bootstrap_servers=[self.bootstrap],
            hl7_topic=f"p{self.tag}.raw.hl7",
            dicom_topic=f"p{self.tag}.raw.dicom",
            output_topic=f"p{self.tag}.bundles",
            group_id=f"p{self.tag}",
            consume=["hl7"],
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        data["sources"]["mllp"]["port"] = self.mllp_port
        data["sources"]["dicom"]["port"] = self.dicom_port
        data["sources"]["inbox"] = {"path": str(self.inbox), "settle_seconds": 0.2, "scan_interval": 0.1}
        data["health"]["port"] = self.health_port
        path = self.root / "kafka.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


@pytest.mark.integration
def test_washu_feed_through_the_shipped_kafka_config(tmp_path: Path, bootstrap: str) -> None:
    from kafka import KafkaAdminClient

    from tests.kafka.kafka_helpers import create_topics, read_topic

    messages = WASHU / "messages"
    mapped = tmp_path / "map"
    subprocess.run(
        [sys.executable, "-m", "engine", "map", "--quiet", "--out", str(mapped), str(messages)],
        capture_output=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    expected = sorted(p.read_bytes() for p in mapped.glob("*.json") if p.name != "summary.json")
    assert expected and all(b"ABCHOSP/accession" in body for body in expected)

    cfg = ShippedKafkaConfig(tmp_path / "run")
    cfg.root.mkdir()
    cfg.bootstrap, cfg.tag = bootstrap, uuid.uuid4().hex[:8]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        create_topics(admin, {f"p{cfg.tag}.raw.hl7": 1, f"p{cfg.tag}.raw.dicom": 1, f"p{cfg.tag}.bundles": 1})
    finally:
        admin.close()
    engine = EngineProcess(cfg)
    engine.start(timeout=60)
    try:
        shutil.copytree(messages, cfg.inbox / "washu", dirs_exist_ok=True)
        records = read_topic(bootstrap, f"p{cfg.tag}.bundles", expect=len(expected), timeout=120)
        assert engine.terminate(timeout=60) == 0
    finally:
        engine.stop_quietly()
    latest = {json.loads(r.value)["id"]: r.value for r in records}  # a later version of a Bundle id wins
    assert sorted(latest.values()) == expected  # byte for byte, with the WashU accession
