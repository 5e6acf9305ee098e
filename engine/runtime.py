"""Wires sources -> worker -> sinks from :class:`engine.settings.Settings` and runs the service.

Lifecycle of :meth:`Runtime.run`:

1. open the message store (or, with ``sources.kafka``, use the Kafka raw topic as the landing and source),
   sinks and dead letters; start ``/livez`` ``/readyz`` ``/metrics``;
2. log how many unfinished messages are resumed, settle inbox files left by a crash;
3. start intake: MLLP listener, DICOM C-STORE SCP, folder inbox (each lands into the landing);
4. run the worker in the main thread. SIGTERM / SIGINT only set the stop flag;
5. graceful shutdown: stop intake (listeners finish and acknowledge what they are storing), drain the
   pending envelopes for up to ``worker.drain_timeout`` seconds, flush and close sinks, close the store;
   exit 0. Whatever is not drained stays unfinished in the store and is resumed at the next start.

Exit codes: 0 clean shutdown, 2 cannot start (port in use, unusable directory), 3 the worker stopped on an
unexpected error (logged loudly; the batch stays unfinished and is resumed after restart).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from engine.convert import Converter, partition_key_for
from engine.errors import ConfigError
from engine.message_index import MessageIndexer
from engine.observability.health import HealthServer
from engine.observability.metrics import Heartbeat, Metrics
from engine.settings import Settings
from engine.sinks.base import DeadLetterSink, Sink
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sinks.folder import FolderSink
from engine.sources.base import Landing, Source
from engine.sources.door import DoorRejects
from engine.sources.inbox import FolderInbox
from engine.store import MessageStore, StoreSource
from engine.worker import Worker

__all__ = ["EXIT_CRASHED", "EXIT_OK", "EXIT_START_FAILED", "Runtime"]

log = logging.getLogger("engine.runtime")

EXIT_OK, EXIT_START_FAILED, EXIT_CRASHED = 0, 2, 3
LINGER_S = 0.1  # how long a started worker batch may wait to fill (StoreSource linger)


def _kafka(name: str) -> Any:
    try:
        module = importlib.import_module("engine.kafka")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Kafka is configured but engine.kafka.{name} is not available ({exc})") from exc


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.metrics = Metrics()
        self.heartbeat = Heartbeat()
        self.store: MessageStore | None = None
        self.landing: Landing | None = None
        self.source: Source | None = None
        self.sinks: list[Sink] = []
        self.dead_letters: DeadLetterSink | None = None
        self.health: HealthServer | None = None
        self.intake: list[tuple[str, Any]] = []  # (name, listener with stop())
        self.worker: Worker | None = None
        self.converter: Any = None  # Converter, or engine.pooled.PooledConverter (worker.processes > 0)
        self.door: DoorRejects | None = None
        self._intake_stopped = False
        self._intake_started = False  # /readyz stays 503 until every listener is bound
        self._store_lock: BinaryIO | None = None
        self.console: Any = None  # engine.console.server.ConsoleServer when settings.console is set

    # -- construction -------------------------------------------------------------------------------

    def _build(self) -> None:
        s = self.settings
        if s.store is not None:
            self._lock_store(s.store.path)
            self.store = MessageStore(s.store.path, indexer=MessageIndexer(s.mapping))
        if s.kafka_source is not None:
            key_function = functools.partial(partition_key_for, context=s.mapping)
            self.landing = _kafka("KafkaLanding")(s.kafka_source, key_function=key_function)
            self.source = _kafka("KafkaSource")(s.kafka_source)
        else:
            assert self.store is not None
            self.landing = self.store
            # linger: under load a worker batch fills for up to 0.1 s, so one sink sync and one store commit
            # serve many messages (engine.store_source); an idle engine adds at most that to a message's latency
            self.source = StoreSource(self.store, linger=min(LINGER_S, s.worker.poll_timeout))
        if s.folder_sink is not None:
            self.sinks.append(FolderSink(s.folder_sink.path))
        if s.kafka_sink is not None:
            self.sinks.append(_kafka("KafkaSink")(s.kafka_sink))
        if s.fhir_sink is not None:
            from engine.publishers.fhir import FhirSink

            self.sinks.append(FhirSink(s.fhir_sink))
        if s.dlq_folder is not None:
            self.dead_letters = FolderDeadLetters(s.dlq_folder.path, deferred=True)
        else:
            self.dead_letters = _kafka("KafkaDeadLetters")(s.dlq_kafka)
        if s.worker.processes > 0:  # conversion in other processes: intake keeps this interpreter to itself
            from engine.pooled import PooledConverter

            self.converter = PooledConverter(s.mapping, model=s.model, processes=s.worker.processes)
        else:
            self.converter = Converter(s.mapping, model=s.model)
        # Listener rejections are counted and kept. They happen on listener threads, outside any worker batch, so
        # they get a dead-letter folder of their own that syncs on every put (the worker's defers to its batch).
        door_dead = FolderDeadLetters(s.dlq_folder.path) if s.dlq_folder is not None else self.dead_letters
        self.door = DoorRejects(door_dead, self.metrics)
        self.worker = Worker(
            self.source,
            self.converter,
            self.sinks,
            self.dead_letters,
            policy=s.worker.retry,
            metrics=self.metrics,
            heartbeat=self.heartbeat,
            batch_size=s.worker.batch_size,
            poll_timeout=s.worker.poll_timeout,
            stop=self.stop,
        )

    def _lock_store(self, path: Path) -> None:
        """One engine per message store: two would process the same messages twice."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a+b")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise ConfigError(f"another engine is already running on the message store {path}") from exc
        self._store_lock = handle

    def _start_health(self) -> None:
        h = self.settings.health
        if h is None:
            return
        checks: dict[str, Callable[[], bool]] = {
            "worker": lambda: self.worker is not None and not self.worker.paused,
            "intake": lambda: self._intake_started,
        }
        if self.store is not None:
            store = self.store
            checks["store"] = store.healthy
        targets: list[Sink | DeadLetterSink] = [*self.sinks]
        if self.dead_letters is not None:
            targets.append(self.dead_letters)
        for sink in targets:
            probe = getattr(sink, "healthy", None)
            if callable(probe):
                checks[f"sink:{sink.name}"] = probe
        self.health = HealthServer(h.host, h.port, self.metrics, self.heartbeat, checks, h.live_timeout)
        self.health.start()

    def _start_intake(self) -> None:
        s = self.settings
        assert self.landing is not None
        if s.inbox is not None:
            # completion is tracked only when the inbox lands into the store (with a Kafka landing nothing
            # finishes its envelopes in the store, and the ids are "topic:partition:offset")
            tracked = self.store is not None and self.landing is self.store
            lookup = self.store.get if tracked and self.store is not None else None
            inbox = FolderInbox(s.inbox, self.landing, track_completion=tracked, lookup=lookup, door=self.door)
            if tracked and self.store is not None:
                store = self.store
                inbox.recover(lambda eid: (m.status if (m := store.get(eid)) else None))
                store.add_listener(inbox.finished)
            inbox.start()
            self._register("inbox", inbox, lambda: inbox.running)
        if s.mllp is not None:
            from engine.sources.mllp import MllpListener

            mllp = MllpListener(s.mllp, self.landing, converter=self.converter, door=self.door)
            mllp.start()
            self._register("mllp", mllp, lambda: bool(mllp.running))
            log.info("mllp listener bound", extra={"port": mllp.port})
        if s.dicom is not None:
            from engine.sources.dicom_scp import StoreScp

            scp = StoreScp(s.dicom, self.landing, converter=self.converter, door=self.door)
            scp.start()
            self._register("dicom", scp, lambda: bool(getattr(scp, "running", True)))
            log.info("dicom scp bound", extra={"port": scp.port})

    def _register(self, name: str, listener: Any, ready: Callable[[], bool]) -> None:
        self.intake.append((name, listener))
        if self.health is not None:
            self.health.add_check(name, ready)

    def stop_intake(self) -> None:
        """Stop accepting new input; listeners finish (and acknowledge) what they are storing."""
        if self._intake_stopped:
            return
        self._intake_stopped = True
        for name, listener in reversed(self.intake):
            try:
                listener.stop()
            except Exception:
                log.exception("stopping intake failed", extra={"source": name})

    # -- lifecycle ----------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            self.install_signal_handlers()
        try:
            self._build()
            self._start_health()
            if self.store is not None:
                counts = self.store.counts()
                resumed = counts["received"] + counts["mapped"]
                if resumed:
                    log.info("resuming unfinished messages", extra={"count": resumed})
            self._start_intake()
            self._intake_started = True
            if self.settings.console is not None:
                from engine.console.server import start_console

                self.console = start_console(self.settings, self.store)
        except Exception as exc:  # port in use, unusable directory, broker unreachable, ...
            log.error("cannot start", extra={"error_class": type(exc).__name__, "reason": str(exc)[:300]})
            self.close()
            return EXIT_START_FAILED
        log.info("engine running", extra={"config": self.settings.summary()})
        assert self.worker is not None
        code = EXIT_OK
        try:
            self.worker.run(self.settings.worker.drain_timeout, before_drain=self.stop_intake)
        except Exception as exc:
            log.critical(
                "worker stopped on an unexpected error; the batch stays unfinished and is resumed after restart",
                exc_info=True,
                extra={"error_class": type(exc).__name__},
            )
            code = EXIT_CRASHED
        self.close()
        log.info("engine stopped", extra={"status": "crashed" if code else "clean"})
        return code

    def close(self) -> None:
        self.stop.set()
        if self.console is not None:
            self.console.stop()
            self.console = None
        self.stop_intake()
        closer = getattr(getattr(self, "converter", None), "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.close()
        if self.dead_letters is not None:
            with contextlib.suppress(Exception):
                self.dead_letters.close()
        if self.source is not None:
            with contextlib.suppress(Exception):
                self.source.close()
        if self.landing is not None and self.landing is not self.store:
            closer = getattr(self.landing, "close", None)
            if callable(closer):
                with contextlib.suppress(Exception):
                    closer()
        if self.store is not None:
            self.store.close()
        if self._store_lock is not None:
            self._store_lock.close()
            self._store_lock = None
        if self.health is not None:
            self.health.stop()
            self.health = None
