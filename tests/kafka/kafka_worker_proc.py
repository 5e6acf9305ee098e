"""A worker process for the Kafka tests: the real engine.worker.Worker over KafkaSource / KafkaSink /
KafkaDeadLetters and the real Converter. ``write_delay`` slows each sink write (so a test can SIGKILL it
mid-batch); SIGTERM stops it gracefully (drain, flush, commit, leave the group).

    python tests/kafka/kafka_worker_proc.py '<json KafkaSettings fields>' WRITE_DELAY_SECONDS
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

from engine.convert import Converter, Output
from engine.kafka import KafkaDeadLetters, KafkaSettings, KafkaSink, KafkaSource
from engine.sources.base import Envelope
from engine.worker import RetryPolicy, Worker

__all__ = ["SlowSink", "build_worker"]


class SlowSink:
    """Wraps a sink; sleeps before each write so that batches take a while (test seam only)."""

    def __init__(self, inner: KafkaSink, delay: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.delay = delay

    def write(self, output: Output, envelope: Envelope) -> None:
        time.sleep(self.delay)
        self.inner.write(output, envelope)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


def build_worker(settings: KafkaSettings, delay: float, stop: threading.Event) -> tuple[Worker, list[Any]]:
    source = KafkaSource(settings)
    sink = KafkaSink(settings)
    dlq = KafkaDeadLetters(settings)
    worker = Worker(
        source, Converter(), [SlowSink(sink, delay)], dlq,
        policy=RetryPolicy(attempts=3, initial=0.05, maximum=0.5, backpressure=0.5),
        batch_size=settings.max_poll_records, poll_timeout=0.2, stop=stop,
    )
    return worker, [source, sink, dlq]


def main(argv: list[str]) -> int:
    fields = json.loads(argv[1])
    fields["bootstrap_servers"] = tuple(fields["bootstrap_servers"])
    fields["consume"] = tuple(fields["consume"])
    settings = KafkaSettings(**fields)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker, closables = build_worker(settings, float(argv[2]), stop)
    print("worker started", flush=True)
    try:
        worker.run(drain_timeout=5.0)
    finally:
        for c in closables:
            c.close()
    print("worker stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
