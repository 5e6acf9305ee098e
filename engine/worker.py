"""The worker loop: poll -> convert -> write every output to every sink -> flush -> dead letters -> ack.

Failure classes (decided once, here):

* **transient** (:class:`engine.errors.TransientError`, ``OSError`` from sinks and the store): retried with
  tenacity (exponential backoff with jitter, ``RetryPolicy.attempts`` tries, injectable ``sleep``); when the
  tries run out the source is paused and the same batch is retried after ``RetryPolicy.backpressure``
  seconds (or :attr:`engine.errors.BackPressure.retry_after`), for as long as it takes. Never dead-lettered.
* **permanent** (:class:`engine.errors.PermanentError`, :class:`pipelines.errors.MappingError`, and
  converter rejections): the failed message's own original bytes go to the dead-letter sink with a
  one-line reason; the rest of the batch carries on.
* **filtered** (converter :class:`engine.outcomes.Filtered`: not a report, e.g. a lab ORU or an ADT): no
  dead letter; the store records status ``filtered`` with the reason and category, and
  ``engine_messages_filtered_total{source,reason}`` counts it.
* **anything else** propagates out of :meth:`Worker.run` (the runtime logs it and exits non-zero); the
  envelopes of the batch stay unacknowledged, so the store resumes them after restart.

An envelope is acknowledged only after all sinks flushed its outputs and its dead letters are stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from engine.convert import Conversion, Converter, Filtered, Output
from engine.errors import BackPressure, PermanentError, TransientError
from engine.observability.metrics import Heartbeat, Metrics
from engine.sinks.base import DeadLetterSink, Sink
from engine.sources.base import Envelope, Source
from engine.store import FAILED, FILTERED, PUBLISHED, Outcome
from pipelines.errors import MappingError

__all__ = ["RetryPolicy", "Stopped", "Worker"]

log = logging.getLogger("engine.worker")

T = TypeVar("T")
TRANSIENT: tuple[type[BaseException], ...] = (TransientError, OSError)
PERMANENT: tuple[type[BaseException], ...] = (PermanentError, MappingError)
MAX_REASON = 300


class Stopped(Exception):
    """The stop flag was set while the worker waited out back-pressure; the batch stays unacknowledged."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5  # tries per round (tenacity stop_after_attempt)
    initial: float = 0.1  # first backoff, seconds
    maximum: float = 5.0  # backoff cap, seconds
    jitter: float = 0.1  # random extra seconds per wait
    backpressure: float = 5.0  # pause after a round failed, before the next round


@runtime_checkable
class OutcomeSource(Protocol):
    """A source that records per-envelope status (the message store); others just get ``ack``."""

    def mark_mapped(self, items: Iterable[tuple[Envelope, Sequence[str]]]) -> None: ...

    def finish(self, outcomes: Sequence[tuple[Envelope, Outcome]]) -> None: ...


@dataclass(slots=True)
class _Plan:
    envelope: Envelope
    outputs: list[Output] = field(default_factory=list)
    dead: list[tuple[bytes, str, str]] = field(default_factory=list)  # (raw, reason, error_class)
    details: dict[str, Any] | None = None  # what a sink's PermanentError adds (e.g. the server's OperationOutcome)
    filtered: list[Filtered] = field(default_factory=list)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:MAX_REASON]


class Worker:
    def __init__(
        self,
        source: Source,
        converter: Converter,
        sinks: Sequence[Sink],
        dead_letters: DeadLetterSink,
        *,
        policy: RetryPolicy | None = None,
        metrics: Metrics | None = None,
        heartbeat: Heartbeat | None = None,
        batch_size: int = 100,
        poll_timeout: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.converter = converter
        self.sinks = list(sinks)
        self.dead_letters = dead_letters
        self.policy = policy or RetryPolicy()
        self.metrics = metrics or Metrics()
        self._received: dict[str, Any] = {}  # source -> labelled child of metrics.received
        self.heartbeat = heartbeat or Heartbeat()
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.sleep = sleep
        self.stop = stop or threading.Event()
        self.paused = False

    # -- loop ---------------------------------------------------------------------------------------

    def run(self, drain_timeout: float = 10.0, before_drain: Callable[[], None] | None = None) -> None:
        """Process until the stop flag is set, call ``before_drain`` (stop intake), then drain what is
        pending for up to ``drain_timeout`` seconds. Unknown exceptions propagate."""
        try:
            while not self.stop.is_set():
                self.heartbeat.tick()
                self.run_once()
            if before_drain is not None:
                before_drain()
            deadline = time.monotonic() + drain_timeout
            while time.monotonic() < deadline:
                self.heartbeat.tick()
                if self.run_once(timeout=0.0) == 0:
                    break
        except Stopped:
            log.info("worker stopped during back-pressure; batch left for resume")

    def run_once(self, timeout: float | None = None) -> int:
        """Poll one batch and process it completely; returns the number of envelopes handled."""
        if self.paused:  # the held batch went through: take new work again
            self.paused = False
            self.metrics.paused.set(0)
            self.source.resume()
            log.info("intake resumed")
        envelopes = self._transient(
            lambda: self.source.poll(self.batch_size, self.poll_timeout if timeout is None else timeout), "poll"
        )
        if envelopes:
            self.process(envelopes)
        return len(envelopes)

    def process(self, envelopes: Sequence[Envelope]) -> None:
        started = time.monotonic()
        conversions = self._prepared(envelopes)
        plans = [self._convert(env, conv) for env, conv in zip(envelopes, conversions, strict=True)]
        if isinstance(self.source, OutcomeSource):
            recorder = self.source
            items = [(p.envelope, [o.bundle_id for o in p.outputs]) for p in plans]
            self._transient(lambda: recorder.mark_mapped(items), "store")
        self._deliver([p for p in plans if p.outputs])
        for plan in plans:
            for raw, reason, error_class in plan.dead:
                self._dead_letter(plan.envelope, raw, reason, error_class, plan.details)
                self.metrics.dead_letters.labels(error_class=error_class).inc()
                log.warning(
                    "dead-lettered",
                    extra={
                        "envelope_id": plan.envelope.id,
                        "source": plan.envelope.source,
                        "error_class": error_class,
                        "reason": reason,
                    },
                )
        flush_dead = getattr(self.dead_letters, "flush", None)
        if callable(flush_dead):  # deferred dead letters: durable (one sync) before the acknowledgement
            self._transient(flush_dead, "dead letters")
        self._acknowledge(plans)
        now_wall, elapsed = time.time(), time.monotonic() - started
        for plan in plans:
            self.metrics.processing.observe(elapsed)
            self.metrics.end_to_end.observe(max(0.0, now_wall - plan.envelope.received_at))
            self.metrics.published.inc(len(plan.outputs))
            for output in plan.outputs:
                log.info(
                    "published",
                    extra={
                        "envelope_id": plan.envelope.id,
                        "bundle_id": output.bundle_id,
                        "control_id": output.ids.get("control_id"),
                        "sop_uid": output.ids.get("sop_uid"),
                        "accession_hash": output.partition_key,
                    },
                )

    # -- steps --------------------------------------------------------------------------------------

    def _prepared(self, envelopes: Sequence[Envelope]) -> list[Conversion | None]:
        """Conversions already made at intake (``ack: converted``: the store hands them over, so a message is
        never converted twice); the others converted as one batch in the conversion processes
        (:class:`engine.pooled.PooledConverter`), or left None for :meth:`_convert` to do in process."""
        take = getattr(self.source, "take_prepared", None)
        conversions: list[Conversion | None] = list(take(envelopes)) if callable(take) else [None] * len(envelopes)
        many = getattr(self.converter, "convert_many", None)  # engine.pooled.PooledConverter: other processes
        missing = [i for i, c in enumerate(conversions) if c is None]
        if missing and callable(many):
            for i, conversion in zip(missing, many([envelopes[i].payload for i in missing]), strict=True):
                conversions[i] = conversion
        return conversions

    def _convert(self, envelope: Envelope, conversion: Conversion | None = None) -> _Plan:
        received = self._received.get(envelope.source)  # the labelled child, cached (labels() is slow)
        if received is None:
            received = self._received[envelope.source] = self.metrics.received.labels(source=envelope.source)
        received.inc()
        plan = _Plan(envelope)
        try:
            if conversion is None:
                conversion = self.converter.convert(envelope.payload)
        except PERMANENT as exc:
            plan.dead.append((envelope.payload, _reason(exc), type(exc).__name__))
            return plan
        plan.outputs.extend(conversion.outputs)
        plan.dead.extend((r.raw, r.reason, r.error_class) for r in conversion.rejections)
        plan.filtered.extend(conversion.filtered)
        for item in conversion.filtered:
            self.metrics.count_filtered(envelope.source, item.reason)
            log.info(
                "filtered",
                extra={"envelope_id": envelope.id, "source": envelope.source, "reason": item.reason},
            )
        if not plan.outputs and not plan.dead and not plan.filtered:
            plan.dead.append((envelope.payload, "input contains no message", "RejectedInput"))
        return plan

    def _write(self, plans: Sequence[_Plan]) -> None:
        for plan in plans:
            for output in plan.outputs:
                for sink in self.sinks:
                    sink.write(output, plan.envelope)
        for sink in self.sinks:
            sink.flush()

    def _deliver(self, plans: Sequence[_Plan]) -> None:
        if not plans:
            return
        try:
            self._transient(lambda: self._write(plans), "sinks")
            return
        except PERMANENT as exc:
            if len(plans) == 1:
                self._reject_whole(plans[0], exc)
                return
        # A permanent failure somewhere in the batch: isolate it envelope by envelope (writes are
        # idempotent overwrites keyed by bundle id, so re-writing the good ones is harmless).
        for plan in plans:
            try:
                self._transient(lambda p=plan: self._write([p]), "sinks")  # type: ignore[misc]
            except PERMANENT as exc:
                self._reject_whole(plan, exc)

    def _dead_letter(
        self, envelope: Envelope, raw: bytes, reason: str, error_class: str, details: dict[str, Any] | None = None
    ) -> None:
        """Store a dead letter. If the destination refuses the original bytes for good (e.g. larger than the
        dead-letter topic accepts), store a stub that names the envelope, the SHA-256 and size of the
        original and the reason instead: the original stays at its landing position (message store row or
        raw-topic record), and one message can never halt the engine in a crash loop."""
        extra = {"details": details} if details else {}  # only sinks that know it get the keyword
        try:
            self._transient(lambda: self.dead_letters.put(envelope, raw, reason, error_class, **extra), "dead letters")
        except PermanentError as exc:
            stub = json.dumps(
                {
                    "dead_letter_stub": True,
                    "envelope_id": envelope.id,
                    "source": envelope.source,
                    "original_sha256": hashlib.sha256(raw).hexdigest(),
                    "original_size": len(raw),
                    "reason": reason,
                    "error_class": error_class,
                    "stub_because": _reason(exc),
                },
                sort_keys=True,
            ).encode()
            why = f"{reason} [original not stored here ({type(exc).__name__}); kept at envelope {envelope.id}]"
            why = why[:MAX_REASON]
            self._transient(lambda: self.dead_letters.put(envelope, stub, why, error_class), "dead letters")

    def _reject_whole(self, plan: _Plan, exc: BaseException) -> None:
        plan.outputs.clear()
        plan.dead[:] = [(plan.envelope.payload, _reason(exc), type(exc).__name__)]
        details = getattr(exc, "details", None)
        plan.details = details if isinstance(details, dict) else None

    def _acknowledge(self, plans: Sequence[_Plan]) -> None:
        source = self.source
        if isinstance(source, OutcomeSource):
            outcomes: list[tuple[Envelope, Outcome]] = []
            for p in plans:
                bundles = tuple(o.bundle_id for o in p.outputs)
                if p.dead:
                    outcomes.append((p.envelope, Outcome(FAILED, p.dead[0][1], p.dead[0][2], bundles)))
                elif p.filtered and not p.outputs:
                    first = p.filtered[0]
                    outcomes.append((p.envelope, Outcome(FILTERED, first.reason, first.category)))
                else:
                    outcomes.append((p.envelope, Outcome(PUBLISHED, outputs=bundles)))
            self._transient(lambda: source.finish(outcomes), "store")
        else:
            envelopes = [p.envelope for p in plans]
            self._transient(lambda: source.ack(envelopes), "source")

    # -- transient handling -------------------------------------------------------------------------

    def _transient(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` with bounded retries; when they run out, pause intake and try again later."""
        while True:
            def before_sleep(state: RetryCallState, what: str = what) -> None:
                self.metrics.retries.inc()
                exc = state.outcome.exception() if state.outcome else None
                log.warning(
                    "transient failure, retrying",
                    extra={"sink": what, "attempt": state.attempt_number, "error_class": type(exc).__name__},
                )

            retrying = Retrying(
                stop=stop_after_attempt(self.policy.attempts),
                wait=wait_exponential(multiplier=self.policy.initial, max=self.policy.maximum)
                + wait_random(0, self.policy.jitter),
                retry=retry_if_exception_type(TRANSIENT),
                sleep=self.sleep,
                before_sleep=before_sleep,
                reraise=True,
            )
            try:
                result: T = retrying(fn)
            except TRANSIENT as exc:
                self._back_off(exc, what)
                continue
            return result

    def _back_off(self, exc: BaseException, what: str) -> None:
        delay = exc.retry_after if isinstance(exc, BackPressure) else self.policy.backpressure
        if not self.paused:
            self.paused = True
            self.metrics.paused.set(1)
            self.source.pause()
        self.metrics.backpressure.inc()
        log.error(
            "transient failure persists, intake paused",
            extra={"sink": what, "error_class": type(exc).__name__, "reason": _reason(exc), "retry_in": delay},
        )
        waited = 0.0
        step = min(0.5, delay) if delay > 0 else 0.0
        while waited < delay:
            if self.stop.is_set():
                raise Stopped(what)
            self.heartbeat.tick()
            self.sleep(step)
            waited += step
        if self.stop.is_set() and delay <= 0:
            raise Stopped(what)

    def describe(self) -> dict[str, Any]:
        return {"sinks": [s.name for s in self.sinks], "dead_letters": self.dead_letters.name}
