"""Prometheus metrics for the worker, on a registry of their own (one per runtime, so tests can isolate).

Counters: ``engine_messages_received_total`` (envelopes handed to the worker, by source; replays and
resumes count again), ``engine_outputs_published_total``, ``engine_dead_letters_total`` (by error class),
``engine_messages_filtered_total`` (by source and reason; at most ``MAX_FILTER_REASONS`` distinct reason
labels, later ones count as ``other``, so sender-chosen values cannot blow up the label set),
``engine_retries_total``, ``engine_backpressure_total``, ``engine_ingress_rejected_total`` (input rejected at
the door by a listener, by source and reason), ``engine_ingress_outcomes_total`` (what senders were told, by
source and outcome: converted, filtered, rejected, stored). Gauge: ``engine_intake_paused``. Histograms:
``engine_processing_seconds`` (poll to acknowledgement, per envelope) and ``engine_end_to_end_seconds``
(landing to acknowledgement). Per-status totals of the message store come from ``engine status``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["MAX_FILTER_REASONS", "Heartbeat", "Metrics"]

MAX_FILTER_REASONS = 64


class Heartbeat:
    """Ticked by the main loop; ``/livez`` fails when it is older than the liveness timeout."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def tick(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("engine_messages_received", "Envelopes handed to the worker", ["source"], registry=r)
        self.published = Counter("engine_outputs_published", "Outputs confirmed by every sink", registry=r)
        self.dead_letters = Counter(
            "engine_dead_letters", "Messages sent to the dead letters", ["error_class"], registry=r
        )
        self.filtered = Counter(
            "engine_messages_filtered", "Messages that are not reports (not dead letters)", ["source", "reason"],
            registry=r,
        )
        self._filter_reasons: set[str] = set()
        self.retries = Counter("engine_retries", "Transient failures retried", registry=r)
        self.backpressure = Counter("engine_backpressure", "Times intake was paused after retries ran out", registry=r)
        self.ingress_rejected = Counter(
            "engine_ingress_rejected",
            "Input rejected at the door (framing, size, refused association, not storable), kept in the dead letters",
            ["source", "reason"],
            registry=r,
        )
        self.ingress_outcomes = Counter(
            "engine_ingress_outcomes",
            "Acknowledged outcome per message told to senders (converted, filtered, rejected, stored)",
            ["source", "outcome"],
            registry=r,
        )
        self.paused = Gauge("engine_intake_paused", "1 while intake is paused for back-pressure", registry=r)
        self.processing = Histogram(
            "engine_processing_seconds", "Poll to acknowledgement, per envelope", registry=r
        )
        self.end_to_end = Histogram(
            "engine_end_to_end_seconds",
            "Landing to acknowledgement, per envelope",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )

    def count_filtered(self, source: str, reason: str) -> None:
        """One filtered message; ``reason`` is the one-line PHI-free reason (bounded label set)."""
        label = reason[:120]
        if label not in self._filter_reasons:
            if len(self._filter_reasons) >= MAX_FILTER_REASONS:
                label = "other"
            else:
                self._filter_reasons.add(label)
        self.filtered.labels(source=source, reason=label).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
