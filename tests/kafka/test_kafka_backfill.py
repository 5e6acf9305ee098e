"""``engine backfill`` into a Kafka topic (real broker): the service's Kafka sink through the same interface,
keyed by the partition key, in input order, rejections to ``<raw topic>.dlq``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cli import main
from engine.convert import Converter
from engine.settings import load_settings
from tests.conftest import TESTDATA
from tests.kafka.kafka_helpers import read_topic

SCOUT = TESTDATA / "hl7v2-washu-scout" / "messages"


def test_backfill_to_kafka(tmp_path: Path, bootstrap: str, make_settings: Callable[..., Any]) -> None:
    settings = make_settings(partitions=2)
    src = tmp_path / "src"
    src.mkdir()
    files = sorted(SCOUT.glob("*.hl7"))[:8]
    for f in files:
        (src / f.name).write_bytes(f.read_bytes())
    good = files[1].read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    no_pid = b"\r".join(s for s in good.split(b"\r") if s and not s.startswith(b"PID")) + b"\r"
    (src / "zz-no-pid.hl7").write_bytes(no_pid)
    kafka = {
        "bootstrap_servers": bootstrap,
        "hl7_topic": settings.hl7_topic,
        "dicom_topic": settings.dicom_topic,
        "output_topic": settings.output_topic,
    }
    cfg = tmp_path / "engine.yaml"
    cfg.write_text(json.dumps({
        "store": {"path": str(tmp_path / "store")},
        "sources": {"inbox": {"path": str(tmp_path / "inbox")}},
        "kafka": kafka, "sinks": {"kafka": {}}, "dlq": {"kafka": {}},
    }))  # fmt: skip
    report = tmp_path / "report.json"
    assert main(["backfill", "--config", str(cfg), "--workers", "0", "--report", str(report), str(src)]) == 1

    converter = Converter(load_settings(cfg).mapping)  # the sender profiles the backfill loads by default
    expected = [o for f in sorted(src.iterdir()) for o in converter.convert(f.read_bytes()).outputs]
    records = read_topic(bootstrap, settings.output_topic, expect=len(expected), timeout=60)
    assert sorted(r.value for r in records) == sorted(o.body for o in expected)
    by_partition: dict[int, list[bytes]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(r.partition, []).append(r.value)
    keys = {o.body: o.partition_key for o in expected}
    assert all(r.key.decode() == keys[r.value] for r in records)
    order = [o.body for o in expected]
    for values in by_partition.values():  # input order within each partition
        assert values == sorted(values, key=order.index)
    dead = read_topic(bootstrap, settings.dlq_topic_for(settings.hl7_topic), expect=1, timeout=30)
    assert [r.value for r in dead] == [no_pid]
    data = json.loads(report.read_text())
    assert data["outputs"] == len(expected) and sum(data["rejected"].values()) == 1
