"""Review finding (fixed: the worker stores a stub dead letter naming the envelope and the original's SHA-256):
a dead letter the dead-letter sink refuses for good.

Store landing (MLLP takes up to 16 MiB) + Kafka dead letters (``max_request_size`` 1 MiB by default): a rejected
message larger than the DLQ producer's limit makes ``KafkaDeadLetters.put`` raise PermanentError. The worker
retries only transient errors, so the PermanentError leaves ``Worker.run`` as an "unexpected" error: exit 3, the
message stays unfinished, the next start polls it first and stops again. Nothing is lost, but one message
halts the whole engine (every later message waits) until an operator removes it by hand.
Real store, converter, folder sink, Kafka dead letters on a real broker (limit lowered to 4 KiB to keep it small).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from engine.convert import Converter
from engine.kafka import KafkaDeadLetters
from engine.sinks.folder import FolderSink
from engine.sources.base import CONTENT_HL7V2
from engine.store import MessageStore, StoreSource
from engine.worker import RetryPolicy, Worker
from tests.kafka.kafka_helpers import headers_of, read_topic
from tests.runtime.conftest import SCOUT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_oversized_dead_letter_does_not_halt_the_engine(tmp_path: Path, make_settings: Any, bootstrap: str) -> None:
    settings = make_settings(max_request_size=4096)
    store = MessageStore(tmp_path / "m.db")
    dlq = KafkaDeadLetters(settings)
    good = sorted(SCOUT.glob("*.hl7"))[1].read_bytes()
    bad = b"NOT HL7 " + b"x" * 10_000  # rejected by the converter, bigger than the DLQ producer's limit
    store.land(bad, content_type=CONTENT_HL7V2, source="mllp", headers={})
    store.land(good, content_type=CONTENT_HL7V2, source="mllp", headers={})
    stops = []
    try:
        for _ in range(3):  # each iteration = one engine start (fresh source, as after a restart)
            worker = Worker(
                StoreSource(store), Converter(), [FolderSink(tmp_path / "out")], dlq,
                policy=RetryPolicy(attempts=1, initial=0, maximum=0, jitter=0, backpressure=0.01), batch_size=1,
            )
            try:
                while worker.run_once(timeout=0.0):
                    pass
            except Exception as exc:  # what Runtime.run does: log critical, exit 3
                stops.append(f"{type(exc).__name__}: {exc}")
        counts = store.counts()
        assert counts["received"] + counts["mapped"] == 0, (counts, stops)
        assert not stops
        # both outcomes happened: the good message was published, the bad one dead-lettered (as a stub)
        assert (counts["published"], counts["failed"]) == (1, 1), counts
        expected = {o.bundle_id for o in Converter().convert(good).outputs}
        assert expected and {p.stem for p in (tmp_path / "out").glob("*.json")} == expected
        (letter,) = read_topic(bootstrap, settings.dlq_topic_for(settings.hl7_topic), expect=1)
        stub = json.loads(letter.value)
        assert stub["dead_letter_stub"] is True
        assert (stub["original_sha256"], stub["original_size"]) == (hashlib.sha256(bad).hexdigest(), len(bad))
        assert "original not stored here" in headers_of(letter)["dlq.error.message"]
    finally:
        dlq.close()
        store.close()
