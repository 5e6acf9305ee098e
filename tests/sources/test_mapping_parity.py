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
from pathlib import Path

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
