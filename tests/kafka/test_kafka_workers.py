"""Real workers over a real broker: end to end with the Converter, rebalance between two workers, and a worker
killed with SIGKILL mid-batch. Real HL7 v2 samples (WashU Scout); outputs are de-duplicated by bundle id."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.convert import Conversion, Converter
from engine.kafka import KafkaLanding, KafkaSettings
from engine.sources.base import CONTENT_HL7V2
from tests.kafka.kafka_helpers import Collector, committed_offsets, headers_of, wait_committed
from tests.kafka.kafka_worker_proc import build_worker

pytestmark = pytest.mark.integration

Factory = Callable[..., KafkaSettings]
SAMPLES = Path(os.environ.get("ENGINE_SHARED", Path(__file__).resolve().parents[3] / "shared")) / (
    "testdata/hl7v2-washu-scout/messages"
)
WORKER_PROC = Path(__file__).with_name("kafka_worker_proc.py")


@pytest.fixture(scope="module")
def samples() -> list[tuple[bytes, Conversion]]:
    files = sorted(SAMPLES.glob("*.hl7"))
    assert len(files) >= 20, f"sample ORU messages missing in {SAMPLES}"
    converter = Converter()
    items = [(f.read_bytes(), converter.convert(f.read_bytes())) for f in files]
    # status-only ORUs are filtered (no dead letter): add a report that cannot be converted (no PID)
    good = files[1].read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    bad = b"\r".join(s for s in good.split(b"\r") if s and not s.startswith(b"PID")) + b"\r"
    items.append((bad, converter.convert(bad)))
    return items


def key_for(conversion: Conversion, payload: bytes) -> str:
    if conversion.outputs and conversion.outputs[0].partition_key:
        return conversion.outputs[0].partition_key
    return hashlib.sha256(payload).hexdigest()


def land_all(settings: KafkaSettings, items: list[tuple[bytes, Conversion]]) -> tuple[dict[str, int], dict[int, int]]:
    """Land every payload; return {envelope id: sample index} and the end offset of each partition."""
    keys = {payload: key_for(conv, payload) for payload, conv in items}
    landing = KafkaLanding(settings, key_function=keys.__getitem__)
    ids: dict[str, int] = {}
    try:
        for n, (payload, _) in enumerate(items):
            ids[landing.land(payload, content_type=CONTENT_HL7V2, source="test", headers={})] = n
    finally:
        landing.close()
    ends: dict[int, int] = {}
    for eid in ids:
        _, part, off = eid.rsplit(":", 2)
        ends[int(part)] = max(ends.get(int(part), 0), int(off) + 1)
    return ids, ends


def expected_bundles(items: list[tuple[bytes, Conversion]]) -> set[str]:
    return {o.bundle_id for _, conv in items for o in conv.outputs}


class ThreadWorker:
    def __init__(self, settings: KafkaSettings, delay: float) -> None:
        self.stop = threading.Event()
        self.worker, self.closables = build_worker(settings, delay, self.stop)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(drain_timeout=5.0)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def owned(self) -> list[Any]:
        """Partitions assigned to this worker's source (read from the test thread; the tracker is locked)."""
        return list(self.closables[0].tracker.owned())

    @property
    def written(self) -> int:
        return int(self.closables[1].written)

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for c in self.closables:
            c.close()
        assert not self.thread.is_alive()
        assert self.error is None, f"worker failed: {self.error!r}"


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_end_to_end_raw_topic_to_bundles_and_dead_letters(
    make_settings: Factory, bootstrap: str, samples: list[tuple[bytes, Conversion]]
) -> None:
    settings = make_settings(partitions=2)
    ids, ends = land_all(settings, samples)
    worker = ThreadWorker(settings, delay=0.0)
    try:
        got = wait_committed(bootstrap, settings.group_id, settings.hl7_topic, ends)
        assert got == ends, "every landed message processed and committed"
    finally:
        worker.shutdown()

    want_outputs = sum(len(conv.outputs) for _, conv in samples)
    want_dead = sum(len(conv.rejections) for _, conv in samples)
    assert want_outputs >= 20 and want_dead >= 1, "samples exercise both paths"
    out = Collector(bootstrap, [settings.output_topic])
    dlq = Collector(bootstrap, [settings.dlq_topic_for(settings.hl7_topic)])
    try:
        out.collect(lambda r: len(r) >= want_outputs)
        dlq.collect(lambda r: len(r) >= want_dead)
    finally:
        out.close()
        dlq.close()
    by_envelope: dict[str, list[Any]] = {}
    for record in out.records:
        by_envelope.setdefault(headers_of(record)["engine.envelope-id"], []).append(record)
    for eid, n in ids.items():
        payload, conv = samples[n]
        records = by_envelope.get(eid, [])
        assert {r.value for r in records} == {o.body for o in conv.outputs}, f"{eid}: Bundles byte-identical"
        for record in records:
            h = headers_of(record)
            output = next(o for o in conv.outputs if o.body == record.value)
            assert record.key.decode() == output.partition_key
            assert h["hl7.control-id"] == output.ids["control_id"] and h["engine.bundle-id"] == output.bundle_id
    bundle = json.loads(out.records[0].value)
    assert bundle["resourceType"] == "Bundle"
    dead = {headers_of(r)["engine.envelope-id"]: r for r in dlq.records}
    for eid, n in ids.items():
        payload, conv = samples[n]
        if conv.rejections:
            assert dead[eid].value == conv.rejections[0].raw == payload
            assert headers_of(dead[eid])["dlq.error.class"] == conv.rejections[0].error_class
    assert len(dead) == want_dead


def test_rebalance_between_two_workers_loses_nothing(
    make_settings: Factory, bootstrap: str, samples: list[tuple[bytes, Conversion]]
) -> None:
    settings = make_settings(partitions=4, max_poll_records=10)
    items = samples * 4
    ids, ends = land_all(settings, items)
    total = sum(ends.values())
    first = ThreadWorker(settings, delay=0.05)
    second: ThreadWorker | None = None

    def committed() -> int:
        return sum(v or 0 for v in committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 4).values())

    try:
        wait_for(lambda: committed() >= 10, 30, "the first worker to commit")
        second = ThreadWorker(settings, delay=0.05)  # joins the group: partitions are rebalanced
        wait_for(lambda: second is not None and bool(second.owned()), 30, "a rebalance")
        assert committed() < total, "the rebalance happened mid-stream"
        assert first.written > 0
        # not waiting for the second worker to publish from its own partitions first: they may hold nothing left
        # (the first worker may have read them before the rebalance), and waiting lets the stream end
        first.shutdown()  # leaves the group mid-stream: its partitions move to the second worker
        got = wait_committed(bootstrap, settings.group_id, settings.hl7_topic, ends)
        assert got == ends
        assert second.written > 0  # it took over (its own partitions, or the first worker's after it left)
    finally:
        if not first.stop.is_set():
            first.shutdown()
        if second is not None:
            second.shutdown()
    # filtered messages (status-only ORUs: not reports) leave no record; every other one does
    expected = {eid for eid, n in ids.items() if items[n][1].outputs or items[n][1].rejections}
    collector = Collector(bootstrap, [settings.output_topic, settings.dlq_topic_for(settings.hl7_topic)])
    try:
        collector.collect(lambda r: {headers_of(x)["engine.envelope-id"] for x in r} >= expected)
    finally:
        collector.close()
    assert collector.envelope_ids() >= expected, "every message processed at least once"
    outputs = [r for r in collector.records if r.topic == settings.output_topic]
    assert {headers_of(r)["engine.bundle-id"] for r in outputs} == expected_bundles(items)
    per_key = {(r.key.decode(), headers_of(r)["engine.bundle-id"]): r.value for r in outputs}
    want = {(o.partition_key, o.bundle_id): o.body for _, conv in items for o in conv.outputs}
    assert per_key == want, "de-duplicated by key + bundle id: exactly the converter's outputs"


def start_proc(settings: KafkaSettings, delay: float, log: Path) -> subprocess.Popen[bytes]:
    fields = json.dumps(dataclasses.asdict(settings))
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, str(WORKER_PROC), fields, str(delay)],
            stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
    finally:
        out.close()


def test_worker_killed_mid_batch_is_resumed_by_another_without_loss(
    make_settings: Factory, bootstrap: str, samples: list[tuple[bytes, Conversion]], tmp_path: Path
) -> None:
    settings = make_settings(partitions=3, max_poll_records=10)
    items = samples * 4
    ids, ends = land_all(settings, items)
    total = sum(ends.values())
    dlq_topic = settings.dlq_topic_for(settings.hl7_topic)
    # filtered messages (status-only ORUs: not reports) leave no record; every other one does
    leaves = {eid for eid, n in ids.items() if items[n][1].outputs or items[n][1].rejections}

    victim = start_proc(settings, delay=0.04, log=tmp_path / "victim.log")
    try:
        wait_for(
            lambda: sum(v or 0 for v in committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 3).values())
            >= 10 or victim.poll() is not None,
            60, "the first worker to commit",
        )
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()[-3000:]
        time.sleep(random.uniform(0.0, 0.5))  # somewhere inside a batch (10 records x 40 ms)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()

    committed = committed_offsets(bootstrap, settings.group_id, settings.hl7_topic, 3)
    done = sum(v or 0 for v in committed.values())
    assert 0 < done < total, f"killed mid-stream (committed {done} of {total})"
    before = Collector(bootstrap, [settings.output_topic, dlq_topic])
    try:
        must = {f"{settings.hl7_topic}:{p}:{o}" for p, c in committed.items() for o in range(c or 0)} & leaves
        before.collect(lambda r: {headers_of(x)["engine.envelope-id"] for x in r} >= must, timeout=20)
        assert before.envelope_ids() >= must, "a committed offset whose output is missing: commit ran ahead"
    finally:
        before.close()

    heir = start_proc(settings, delay=0.0, log=tmp_path / "heir.log")
    try:
        got = wait_committed(bootstrap, settings.group_id, settings.hl7_topic, ends, timeout=90)
        assert got == ends, (tmp_path / "heir.log").read_text()[-3000:]
    finally:
        heir.send_signal(signal.SIGTERM)
        try:
            code = heir.wait(timeout=30)
        except subprocess.TimeoutExpired:
            heir.kill()
            code = heir.wait()
    assert code == 0, (tmp_path / "heir.log").read_text()[-3000:]

    after = Collector(bootstrap, [settings.output_topic, dlq_topic])
    try:
        after.collect(lambda r: {headers_of(x)["engine.envelope-id"] for x in r} >= leaves)
    finally:
        after.close()
    assert after.envelope_ids() >= leaves, "every landed message has its output or dead letter"
    outputs = [r for r in after.records if r.topic == settings.output_topic]
    assert {headers_of(r)["engine.bundle-id"] for r in outputs} == expected_bundles(items)
