"""The worker with the real store, real converter, real folder sink and folder dead letters.

Failure paths use a thin wrapper around the real folder sink that fails on purpose (the seam the
worker sees); the sink itself is exercised for real in every test.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from engine.convert import Converter, Output
from engine.errors import BackPressure, PermanentError
from engine.observability.metrics import Metrics
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sinks.folder import FolderSink
from engine.sources.base import CONTENT_HL7V2, Envelope
from engine.store import MessageStore, StoreSource
from engine.worker import RetryPolicy, Worker


class FailingSink:
    """Delegates to a real FolderSink; ``fail(output)`` decides whether a write/flush raises first."""

    name = "folder"

    def __init__(self, inner: FolderSink, flush_errors: list[BaseException] | None = None,
                 poison: str | None = None) -> None:
        self.inner = inner
        self.flush_errors = list(flush_errors or [])
        self.poison = poison
        self.flushes = 0

    def write(self, output: Output, envelope: Envelope) -> None:
        if self.poison is not None and output.bundle_id == self.poison:
            raise PermanentError("server rejected the Bundle (422)")
        self.inner.write(output, envelope)

    def flush(self) -> None:
        self.flushes += 1
        if self.flush_errors:
            raise self.flush_errors.pop(0)
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _setup(tmp_path: Path, sink_factory=None, policy: RetryPolicy | None = None):  # type: ignore[no-untyped-def]
    store = MessageStore(tmp_path / "store" / "messages.db")
    folder = FolderSink(tmp_path / "out")
    sink = sink_factory(folder) if sink_factory else folder
    sleeps = Sleeps()
    metrics = Metrics()
    policy = policy or RetryPolicy(attempts=3, initial=0.01, maximum=0.05, jitter=0.001, backpressure=1.0)
    worker = Worker(StoreSource(store), Converter(), [sink], FolderDeadLetters(tmp_path / "dlq"), policy=policy,
                    metrics=metrics, sleep=sleeps, poll_timeout=0.0)
    return store, worker, sink, sleeps, metrics


def _land(store: MessageStore, payload: bytes) -> str:
    return store.land(payload, content_type=CONTENT_HL7V2, source="test", headers={})


def _drain(worker: Worker) -> None:
    while worker.run_once(timeout=0.0):
        pass


def _outbox(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}


def _dlq(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "dlq").glob("*.json"))]


def test_samples_end_to_end(tmp_path: Path, scout_messages: list[Path]) -> None:
    store, worker, _sink, _sleeps, metrics = _setup(tmp_path)
    converter = Converter()
    expected: dict[str, bytes] = {}
    filtered: list[str] = []
    rejected: list[bytes] = []
    ids = []
    broken = scout_messages[3].read_bytes().rstrip(b"\r\n") + b"\rNTE|1||\x00\x00\r"  # NUL bytes: ParseError
    for data in [p.read_bytes() for p in scout_messages] + [broken]:
        ids.append(_land(store, data))
        conversion = converter.convert(data)
        expected.update({f"{o.bundle_id}.json": o.body for o in conversion.outputs})
        filtered.extend(f.reason for f in conversion.filtered)
        rejected.extend(r.raw for r in conversion.rejections)
    assert rejected == [broken]  # status-only ORUs of the feed are filtered (not reports), never dead letters
    assert filtered, "the sample set includes status-only ORUs (not reports)"
    _drain(worker)

    assert _outbox(tmp_path) == expected  # byte-identical to the converter (= `engine map`) output
    sidecars = _dlq(tmp_path)  # only the rejection: filtered messages are not dead letters
    assert sorted((tmp_path / "dlq" / str(s["payload_file"])).read_bytes() for s in sidecars) == rejected
    assert all(s["error_class"] == "ParseError" and s["reason"] for s in sidecars)
    counts = store.counts()
    assert counts["failed"] == 1 and counts["filtered"] == len(filtered)
    assert counts["published"] == len(scout_messages) - len(filtered)
    assert counts["received"] == counts["mapped"] == 0
    stored = [store.get(i) for i in ids]
    for m in stored:
        assert m is not None and (m.outputs or m.status in ("filtered", "failed"))
        if m.status == "filtered":
            assert m.error_class == "UnsupportedMessage" and m.error_reason in filtered
    assert metrics.registry.get_sample_value("engine_messages_received_total", {"source": "test"}) == len(ids)
    for reason in set(filtered):
        assert metrics.registry.get_sample_value(
            "engine_messages_filtered_total", {"source": "test", "reason": reason}) == filtered.count(reason)
    assert metrics.registry.get_sample_value("engine_dead_letters_total", {"error_class": "UnsupportedMessage"}) is None
    assert metrics.registry.get_sample_value("engine_dead_letters_total", {"error_class": "ParseError"}) == 1
    store.close()


def test_multi_message_input_dead_letters_only_the_bad_message(tmp_path: Path, scout_messages: list[Path]) -> None:
    good = scout_messages[1].read_bytes()
    bad = b"\r".join(s for s in good.replace(b"\n", b"\r").split(b"\r") if not s.startswith(b"PID"))  # no PID
    conversion = Converter().convert(bad)
    assert conversion.rejections and not conversion.outputs
    assert conversion.rejections[0].error_class == "InvalidReport"  # a report that cannot be converted
    store, worker, _sink, _sleeps, metrics = _setup(tmp_path)
    eid = _land(store, good.rstrip(b"\r\n") + b"\r" + bad)
    _drain(worker)
    assert len(_outbox(tmp_path)) == 1
    [sidecar] = _dlq(tmp_path)
    assert (tmp_path / "dlq" / str(sidecar["payload_file"])).read_bytes().startswith(b"MSH")
    assert sidecar["envelope_id"] == eid and sidecar["error_class"] == "InvalidReport"
    message = store.get(eid)
    assert message is not None and message.status == "failed" and len(message.outputs) == 1
    assert metrics.registry.get_sample_value("engine_dead_letters_total", {"error_class": "InvalidReport"}) == 1
    store.close()


def test_transient_failure_is_retried_without_dead_letters(tmp_path: Path, scout_messages: list[Path]) -> None:
    store, worker, sink, sleeps, metrics = _setup(
        tmp_path, lambda f: FailingSink(f, flush_errors=[OSError(28, "No space left on device")] * 2))
    _land(store, scout_messages[1].read_bytes())
    _drain(worker)
    assert sink.flushes == 3 and len(sleeps.calls) == 2 and sleeps.calls[0] < sleeps.calls[1]  # exponential
    assert len(_outbox(tmp_path)) == 1 and _dlq(tmp_path) == []
    assert metrics.registry.get_sample_value("engine_retries_total") == 2
    assert store.counts()["published"] == 1
    store.close()


def test_persistent_transient_failure_pauses_intake_then_recovers(tmp_path: Path, scout_messages: list[Path]) -> None:
    errors: list[BaseException] = [OSError(5, "I/O error")] * 5 + [BackPressure("full", retry_after=2.0)] * 4
    store, worker, _sink, sleeps, metrics = _setup(tmp_path, lambda f: FailingSink(f, flush_errors=errors))
    _land(store, scout_messages[1].read_bytes())
    assert worker.run_once(timeout=0.0) == 1
    assert metrics.registry.get_sample_value("engine_backpressure_total") == 3  # 9 failures, 3 tries per round
    assert worker.paused  # resumes at the next poll
    assert sum(s for s in sleeps.calls if s == 0.5) >= 1.0  # waited out the pause (back-pressure 1 s, then 2 s)
    assert len(_outbox(tmp_path)) == 1 and _dlq(tmp_path) == []
    _land(store, scout_messages[2].read_bytes())
    assert worker.run_once(timeout=0.0) == 1
    assert not worker.paused and metrics.registry.get_sample_value("engine_intake_paused") == 0
    assert store.counts() == {"received": 0, "mapped": 0, "published": 2, "failed": 0, "filtered": 0}
    store.close()


def test_stop_during_backpressure_leaves_message_unfinished(tmp_path: Path, scout_messages: list[Path]) -> None:
    stop = threading.Event()
    store, worker, _sink, _sleeps, _metrics = _setup(
        tmp_path, lambda f: FailingSink(f, flush_errors=[OSError(5, "I/O error")] * 100))
    worker.stop = stop
    worker.sleep = lambda s: stop.set()  # SIGTERM arrives while paused
    _land(store, scout_messages[1].read_bytes())
    worker.run(drain_timeout=0.0)
    assert store.counts()["mapped"] == 1 and _dlq(tmp_path) == []
    store.close()


def test_permanent_sink_failure_dead_letters_and_continues(tmp_path: Path, scout_messages: list[Path]) -> None:
    data = [p.read_bytes() for p in scout_messages[1:4]]
    poison = Converter().convert(data[1]).outputs[0].bundle_id
    store, worker, _sink, _sleeps, _metrics = _setup(tmp_path, lambda f: FailingSink(f, poison=poison))
    ids = [_land(store, d) for d in data]
    _drain(worker)
    assert len(_outbox(tmp_path)) == 2 and f"{poison}.json" not in _outbox(tmp_path)
    [sidecar] = _dlq(tmp_path)
    assert sidecar["envelope_id"] == ids[1] and sidecar["error_class"] == "PermanentError"
    assert (tmp_path / "dlq" / str(sidecar["payload_file"])).read_bytes() == data[1]
    assert [store.get(i).status for i in ids] == ["published", "failed", "published"]
    store.close()


def test_unknown_exception_stops_and_message_is_resumed(tmp_path: Path, scout_messages: list[Path]) -> None:
    store, worker, _sink, _sleeps, _metrics = _setup(
        tmp_path, lambda f: FailingSink(f, flush_errors=[RuntimeError("bug")]))
    eid = _land(store, scout_messages[1].read_bytes())
    with pytest.raises(RuntimeError):
        worker.run(drain_timeout=0.0)
    assert store.get(eid).status == "mapped"
    assert _outbox(tmp_path) == {} and _dlq(tmp_path) == []
    store.close()

    store, worker, _sink, _sleeps, _metrics = _setup(tmp_path)  # restart
    _drain(worker)
    assert store.get(eid).status == "published"
    assert len(_outbox(tmp_path)) == 1
    store.close()
