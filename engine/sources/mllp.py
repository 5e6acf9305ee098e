"""MLLP listener: HL7 v2 over TCP (optionally TLS), persist before acknowledge, honest acknowledgements.

:class:`MllpListener` runs an asyncio server (public ``asyncio.start_server`` API) on its own event loop
in a background thread. Each connection is persistent and may carry any number of messages; the bytes
are framed by :class:`~engine.sources.mllp_framing.MllpDecoder`. For every message:

1. **store**: the message store's ``land_async`` (awaited: the loop never blocks on disk), or
   ``landing.land(original bytes)`` in a thread pool for other landings (Kafka);
2. with ``ack: converted`` (the default), at the same time, convert it (pure, under a millisecond): in the
   listener's own conversion process when the converter is an :class:`engine.pooled.PooledConverter`
   (:class:`engine.conversion_channel.ConversionChannel`, driven from the event loop), in a pool of N spawned
   processes with ``convert_processes: N``, else in the thread pool. The message store keeps the result for
   its worker, which does not convert it again;
3. acknowledge, once both are done, per HL7 v2.5.1 2.9, chosen by the message's own MSH-15/MSH-16
   (:func:`engine.sources.hl7_ack.acknowledgements`):

=================================  =====================  ===================================================
what happened                      original mode (MSA-1)  enhanced mode: accept ACK, then application ACK
=================================  =====================  ===================================================
stored and converted               ``AA``                 ``CA`` (MSH-15), ``AA`` (MSH-16)
stored, not a report we convert    ``AR`` + reason, ERR   ``CA``, ``AR`` + reason
stored, conversion failed          ``AE`` + reason, ERR   ``CA``, ``AE`` + reason (dead letter kept)
stored (``ack: stored``)           ``AA``                 ``CA`` (no application ACK)
storage failed (transient)         ``AE``                 ``CE``
cannot be stored (permanent)       ``AR``                 ``CR``
not HL7 / bad framing / too large  ``AR`` + reason        ``CR`` when MSH is readable and asks, else ``AR``
=================================  =====================  ===================================================

The application ACK travels on the same connection right after the accept ACK (what MLLP peers expect;
a separate return connection is not used). An incoming ``ACK`` message is stored but never acknowledged
(2.9: acknowledgements are not acknowledged). Reasons are engine texts or the mapper's PHI-free reason.

**Batches** (2.10.3): a frame that starts with ``FHS``/``BHS`` is stored as one unit (its original bytes,
which the worker splits like ``engine map``) and answered with one batch acknowledgement (2.10.3.3):
``FHS``/``BHS`` with FHS-12/BHS-12 naming the original batch, one original-mode ``ACK`` per message in
input order (``AA``/``AE``/``AR`` as above), ``BTS``/``FTS``.

**Nothing is dropped silently**: bytes outside frames, a frame without its start or end block, a frame
above ``max_message_bytes`` and a frame without MSH get an ``AR`` (with MSA-2 when MSH is readable) and
are counted and kept by :class:`~engine.sources.door.DoorRejects` (``engine_ingress_rejected_total`` and
the dead letters). A frame above the limit also closes the connection (its end cannot be found again).
Connections from peers outside ``allowed_peers`` are refused the same way (counted, logged, closed).
An idle connection is closed after ``idle_timeout_s``; a junk run followed by 2 s of silence is answered.

This module holds the event loop, the server and the connections; storing, converting and answering one item
(and the door rejections) live in :class:`engine.sources.mllp_intake.MllpIntake`, its base class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import ssl
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from engine.convert import Converter
from engine.sources.base import Landing
from engine.sources.door import DoorRejects
from engine.sources.listener_settings import MllpSettings, TlsSettings
from engine.sources.mllp_framing import FrameTooLarge, MllpDecoder
from engine.sources.mllp_intake import MllpIntake
from engine.sources.mllp_verdicts import init_converter_process

__all__ = ["MllpListener", "MllpSettings", "TlsSettings"]

log = logging.getLogger("engine.sources.mllp")

_READ_CHUNK = 65536
_JUNK_SILENCE_S = 2.0  # a junk run outside frames followed by this much silence is answered


class _Connection:
    __slots__ = ("busy", "peer", "task")

    def __init__(self, peer: str, task: asyncio.Task[None]) -> None:
        self.peer = peer
        self.task = task
        self.busy = False


class MllpListener(MllpIntake):
    """Persist-before-ACK MLLP server on a background event loop (see the module docstring)."""

    def __init__(
        self,
        settings: MllpSettings,
        landing: Landing,
        *,
        converter: Converter | None = None,
        door: DoorRejects | None = None,
    ) -> None:
        super().__init__(settings, landing, converter=converter, door=door)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False
        self._port = 0

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when the settings asked for port 0)."""
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and start serving; returns once the socket is bound (raises OSError/ValueError otherwise)."""
        if self._thread is not None:
            raise RuntimeError("MllpListener already started")
        ssl_ctx = self.settings.tls.server_context() if self.settings.tls else None
        self._executor = ThreadPoolExecutor(self.settings.land_threads, thread_name_prefix="mllp-land")
        if self.settings.ack == "converted" and self.settings.convert_processes:
            self._pool = ProcessPoolExecutor(
                self.settings.convert_processes,
                mp_context=multiprocessing.get_context("spawn"),  # never fork a process with threads
                initializer=init_converter_process,
                initargs=(self.converter.context, getattr(self.converter, "model", "document")),
            )
        self._thread = threading.Thread(target=self._run, args=(ssl_ctx,), name="mllp-listener", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._executor.shutdown(wait=False)
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            raise self._start_error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let messages being stored finish and be acknowledged, then close everything."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout + 5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout + 5.0)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        log.info("mllp listener stopped", extra={"port": self._port})

    def _run(self, ssl_ctx: ssl.SSLContext | None) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._handle, self.settings.host, self.settings.port, ssl=ssl_ctx, reuse_address=True
                )
            )
            self._port = int(self._server.sockets[0].getsockname()[1])
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        log.info(
            "mllp listener on %s:%d%s (ack: %s)",
            self.settings.host,
            self._port,
            " (TLS)" if ssl_ctx else "",
            self.settings.ack,
            extra={"port": self._port},
        )
        self._start_channel(loop)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @staticmethod
    def _on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """One line instead of asyncio's traceback dump (failed TLS handshakes, resets during close)."""
        exc = context.get("exception")
        detail = f"{exc.__class__.__name__}: {exc}" if exc else ""
        log.warning("mllp: %s %s", context.get("message", "event loop error"), detail)

    async def _shutdown(self, timeout: float) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            if not conn.busy:  # waiting for bytes: nothing in flight
                conn.task.cancel()
        tasks = list(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                busy = self._connections.get(task)
                log.warning("mllp: connection %s still busy at shutdown, closing", busy.peer if busy else "?")
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        await self._close_channel()

    # -- connections ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if self._closing:
            writer.close()
            return
        if isinstance(peername, tuple) and not self.settings.peer_allowed(str(peername[0])):
            await self._refuse_peer(peer, writer)
            return
        conn = _Connection(peer, task)
        self._connections[task] = conn
        self.counters["connections"] += 1
        decoder = MllpDecoder(self.settings.max_message_bytes, self.door.keep_bytes)
        idle = self.settings.idle_timeout_s or None
        try:
            while not self._closing:
                wait = idle
                if decoder.pending and not decoder.in_frame:
                    wait = min(idle or _JUNK_SILENCE_S, _JUNK_SILENCE_S)
                try:
                    async with asyncio.timeout(wait):
                        data = await reader.read(_READ_CHUNK)
                except TimeoutError:
                    if decoder.pending and not decoder.in_frame:  # a junk run followed by silence
                        conn.busy = True
                        for item in decoder.flush():
                            await self._item(item, peer, writer)
                        conn.busy = False
                        continue
                    self.counters["idle_closed"] += 1
                    log.info("mllp: closing idle connection %s after %.0f s", peer, idle)
                    break
                if not data:
                    break
                conn.busy = True
                skipped = decoder.skipped
                try:
                    items = decoder.feed(data)
                except FrameTooLarge as exc:
                    for item in exc.completed:
                        await self._item(item, peer, writer)
                    await self._too_large(exc, peer, writer)
                    break
                if decoder.skipped != skipped:
                    self.counters["junk_bytes"] += decoder.skipped - skipped
                for item in items:
                    await self._item(item, peer, writer)
                conn.busy = False
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("mllp: connection %s ended: %s", peer, exc.__class__.__name__)
        except Exception:  # a bug must not take the listener down; the sender gets no ACK and resends
            self.counters["errors"] += 1
            log.exception("mllp: unexpected error on connection %s", peer)
        finally:
            self._connections.pop(task, None)
            leftover = decoder.flush()
            if leftover:  # the peer closed (or we stopped) mid-frame: keep the bytes, try to answer
                with contextlib.suppress(Exception):
                    for item in leftover:
                        await self._item(item, peer, writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)
