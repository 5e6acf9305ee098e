"""MLLP listener: HL7 v2 over TCP (optionally TLS), persist before acknowledge, honest acknowledgements.

:class:`MllpListener` runs an asyncio server (public ``asyncio.start_server`` API) on its own event loop
in a background thread. Each connection is persistent and may carry any number of messages; the bytes
are framed by :class:`~engine.sources.mllp_framing.MllpDecoder`. For every message:

1. **store first**: ``landing.land(original bytes)`` in a thread pool (the loop never blocks on disk);
2. with ``ack: converted`` (the default) the message is converted by :class:`engine.convert.Converter`
   (pure, about a millisecond) in the same thread pool, or with ``convert_processes: N`` in a pool of N
   spawned processes that send back only the verdict, so the loop stays free for other connections;
3. acknowledge per HL7 v2.5.1 2.9, chosen by the message's own MSH-15/MSH-16
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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import multiprocessing
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from engine.convert import Converter
from engine.errors import PermanentError, TransientError
from engine.outcomes import Conversion
from engine.sources.base import CONTENT_HL7V2, Landing
from engine.sources.door import DoorRejects
from engine.sources.hl7_ack import (
    ERROR_SEGMENT_SEQUENCE,
    MshInfo,
    Verdict,
    ack_control_id,
    acknowledgements,
    build_ack,
    is_batch,
    read_msh,
)
from engine.sources.listener_settings import MllpSettings, TlsSettings
from engine.sources.mllp_framing import FrameTooLarge, Garbage, MllpDecoder, frame
from engine.sources.mllp_verdicts import (
    CONVERSION_BUG,
    NOT_HL7,
    batch_response,
    batch_verdicts,
    full_conversion,
    init_converter_process,
    merge,
    slim_conversion,
    verdicts,
)

__all__ = ["MllpListener", "MllpSettings", "TlsSettings"]

log = logging.getLogger("engine.sources.mllp")

_READ_CHUNK = 65536
_JUNK_SILENCE_S = 2.0  # a junk run outside frames followed by this much silence is answered
_OCTETS = "application/octet-stream"


class _Connection:
    __slots__ = ("busy", "peer", "task")

    def __init__(self, peer: str, task: asyncio.Task[None]) -> None:
        self.peer = peer
        self.task = task
        self.busy = False


class MllpListener:
    """Persist-before-ACK MLLP server on a background event loop (see the module docstring)."""

    def __init__(
        self,
        settings: MllpSettings,
        landing: Landing,
        *,
        converter: Converter | None = None,
        door: DoorRejects | None = None,
    ) -> None:
        self.settings = settings
        self.landing = landing
        self.converter = converter or Converter()
        self.door = door or DoorRejects()
        # the message store keeps a conversion made for the ACK for its worker (engine.store_source); others don't
        self._hand_over = getattr(landing, "prepared", None) is not None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False
        self._port = 0
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "connections", "accepted", "rejected", "errors", "too_large", "idle_closed", "junk_bytes",
                "converted", "filtered", "failed", "refused_peers", "garbage",
            ),
            0,
        )  # fmt: skip

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
                initargs=(self.converter.context,),
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

    async def _blocking(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

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

    async def _refuse_peer(self, peer: str, writer: asyncio.StreamWriter) -> None:
        self.counters["refused_peers"] += 1
        log.warning("mllp: connection from %s refused: not in allowed_peers", peer, extra={"source": "mllp"})
        reason = "connection refused: peer address not in allowed_peers"
        await self._blocking(
            functools.partial(
                self.door.reject,
                source=self.settings.name,
                reason_code="refused-peer",
                reason=reason,
                payload=json.dumps({"peer": peer, "reason": reason}).encode(),
                content_type=CONTENT_HL7V2,
                kept_type="application/json",
                headers={"source.endpoint": peer},
            )
        )
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _item(self, item: bytes | Garbage, peer: str, writer: asyncio.StreamWriter) -> None:
        if isinstance(item, Garbage):
            await self._garbage(item, peer, writer)
        elif is_batch(item):
            await self._batch(item, peer, writer)
        else:
            await self._message(item, peer, writer)

    # -- door rejections -------------------------------------------------------------------------
    async def _door(
        self, payload: bytes, size: int, code: str, reason: str, msh: MshInfo | None, peer: str
    ) -> None:
        headers = {"source.endpoint": peer}
        if msh is not None:
            headers["hl7.control-id"] = msh.control_id
            headers["hl7.message-type"] = msh.message_type.replace(msh.encoding_characters[0], "^")
        self.counters["rejected"] += 1
        log.warning(
            "mllp: rejected at the door from %s (%s): %s",
            peer,
            code,
            reason,
            extra={"control_id": msh.control_id if msh else "", "source": self.settings.name},
        )
        await self._blocking(
            functools.partial(
                self.door.reject,
                source=self.settings.name,
                reason_code=code,
                reason=reason,
                payload=payload,
                size=size,
                content_type=CONTENT_HL7V2,
                kept_type=CONTENT_HL7V2 if msh else _OCTETS,
                headers=headers,
            )
        )
        self.door.outcome(self.settings.name, "rejected")

    async def _garbage(self, item: Garbage, peer: str, writer: asyncio.StreamWriter) -> None:
        self.counters["garbage"] += 1
        msh = read_msh(item.data)
        await self._door(item.data, item.size, item.reason, item.description, msh, peer)
        await self._answer(msh, Verdict("R", item.description, ERROR_SEGMENT_SEQUENCE), None, writer)

    async def _too_large(self, exc: FrameTooLarge, peer: str, writer: asyncio.StreamWriter) -> None:
        self.counters["too_large"] += 1
        msh = read_msh(exc.head)
        reason = f"message exceeds {exc.limit} bytes"
        await self._door(exc.head, exc.size, "too-large", reason, msh, peer)
        await self._answer(msh, Verdict("R", reason), None, writer)

    # -- messages --------------------------------------------------------------------------------
    def _headers(self, msh: MshInfo, peer: str, received: datetime) -> dict[str, str]:
        headers = {
            "hl7.control-id": msh.control_id,
            "hl7.message-type": msh.message_type.replace(msh.encoding_characters[0], "^"),
            "hl7.version": msh.version,
            "source.endpoint": peer,
            "received.at": received.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        if msh.charset:
            headers["hl7.charset"] = msh.charset
        return headers

    async def _store(
        self,
        payload: bytes,
        headers: dict[str, str],
        label: str,
        peer: str,
        conversion: Future[Conversion | None] | None = None,
    ) -> Verdict:
        """Land ``payload``; the commit-stage verdict (A stored, E retry later, R never storable). A landing that
        keeps conversions (the message store) gets ``conversion`` too, for the worker (never converted twice)."""
        extra = {"conversion": conversion} if conversion is not None and self._hand_over else {}
        land = functools.partial(
            self.landing.land, payload, content_type=CONTENT_HL7V2, source=self.settings.name, headers=headers,
            **extra,
        )  # fmt: skip
        try:
            envelope_id = await self._blocking(land)
        except TransientError as exc:
            # The sender sees a generic reason; details (paths, hosts) stay in our log.
            log.warning("mllp: landing failed for control id %s from %s: %s", label, peer, exc)
            return Verdict("E", "message not stored (temporary storage failure), retry later")
        except PermanentError as exc:  # can never be stored (e.g. above Kafka's max_request_size): do not resend
            log.error("mllp: landing rejected control id %s from %s: %s", label, peer, exc)
            reason = "message not stored (the message store cannot take it, e.g. too large)"
            await self._door(payload, len(payload), "store-refused", reason, read_msh(payload), peer)
            return Verdict("R", reason)
        except Exception as exc:  # unknown: never acknowledge success, report loudly, keep serving
            self.counters["errors"] += 1
            log.error("mllp: unexpected landing error for control id %s", label, exc_info=True)
            return Verdict("E", f"message not stored: internal error ({exc.__class__.__name__})")
        self.counters["accepted"] += 1
        log.debug("mllp: landed %s as %s from %s", label, envelope_id, peer)
        return Verdict("A")

    async def _store_and_convert(
        self, payload: bytes, headers: dict[str, str], label: str, peer: str, converted: bool
    ) -> tuple[Verdict, Conversion | None]:
        """Land ``payload`` and, with ``ack: converted``, convert it at the same time (the ACK waits for both).
        The message store gets a future of the conversion with the row, resolved here, so its worker takes the
        result instead of converting a second time (``engine.store_source.PreparedConversions``)."""
        if not converted:
            return await self._store(payload, headers, label, peer), None
        conversion_task = asyncio.ensure_future(self._convert(payload, label))
        hand_over: Future[Conversion | None] | None = Future() if self._hand_over else None
        conversion: Conversion | None = None
        try:
            stored = await self._store(payload, headers, label, peer, hand_over)
            conversion = await conversion_task
        finally:
            if hand_over is not None:  # always resolved: the worker may be waiting for it
                hand_over.set_result(conversion)
            if not conversion_task.done():
                conversion_task.cancel()
        return stored, conversion

    async def _convert(self, payload: bytes, label: str) -> Conversion | None:
        try:
            if self._pool is not None:  # another process: the GIL stays with the event loop and the stores
                loop = asyncio.get_running_loop()
                convert = full_conversion if self._hand_over else slim_conversion  # Bundles only for the worker
                result: Conversion = await loop.run_in_executor(self._pool, convert, payload)
            else:
                result = await self._blocking(functools.partial(self.converter.convert, payload))
        except Exception:  # a converter bug: the message is stored, the worker will meet it too
            self.counters["errors"] += 1
            log.error("mllp: conversion for the ACK failed unexpectedly (control id %s)", label, exc_info=True)
            return None
        return result

    def _count(self, verdict: Verdict) -> None:
        outcome = {"A": "converted", "R": "filtered", "E": "failed"}[verdict.kind]
        self.counters[outcome] += 1
        self.door.outcome(self.settings.name, {"failed": "rejected"}.get(outcome, outcome))

    async def _message(self, message: bytes, peer: str, writer: asyncio.StreamWriter) -> None:
        msh = read_msh(message)
        if msh is None:
            await self._door(message, len(message), "not-hl7", NOT_HL7.text, None, peer)
            await self._answer(None, NOT_HL7, None, writer)
            return
        received = datetime.now(UTC)
        is_ack = msh.message_code.upper() == "ACK"  # 2.9: an acknowledgement is never acknowledged (nor converted)
        converted = self.settings.ack == "converted" and not is_ack
        headers = self._headers(msh, peer, received)
        stored, conversion = await self._store_and_convert(message, headers, msh.control_id, peer, converted)
        if is_ack:
            return
        applied: Verdict | None = None
        if stored.kind == "A":
            if converted:
                applied = CONVERSION_BUG if conversion is None else merge(verdicts(conversion))
                self._count(applied)
            else:
                self.door.outcome(self.settings.name, "stored")
        await self._answer(msh, stored, applied, writer)

    async def _batch(self, payload: bytes, peer: str, writer: asyncio.StreamWriter) -> None:
        from pipelines.hl7v2 import split_stream

        received = datetime.now(UTC)
        chunks = split_stream(payload)
        mshs = [None if c.junk else read_msh(c.data) for c in chunks]
        first = next((m for m in mshs if m is not None), None)
        headers = {"hl7.batch": "true", "hl7.batch-messages": str(len(chunks)), "source.endpoint": peer}
        if first is not None:
            headers.update({k: v for k, v in self._headers(first, peer, received).items() if k != "hl7.control-id"})
        converted = self.settings.ack == "converted"
        stored, conversion = await self._store_and_convert(payload, headers, "batch", peer, converted)
        results = batch_verdicts(mshs, stored, conversion, converted)
        if stored.kind == "A":
            for msh, verdict in zip(mshs, results, strict=True):
                if converted or msh is None:
                    self._count(verdict)
                else:
                    self.door.outcome(self.settings.name, "stored")
        await self._send(writer, batch_response(payload, mshs, results, received.astimezone()))

    async def _answer(
        self, msh: MshInfo | None, stored: Verdict, applied: Verdict | None, writer: asyncio.StreamWriter
    ) -> None:
        now = datetime.now(UTC).astimezone()
        for code, verdict in acknowledgements(msh, stored, applied):
            ack_id = ack_control_id(msh.control_id if msh else "", time.time_ns(), code)
            text = verdict.text if verdict.kind != "A" else ""
            await self._send(writer, build_ack(msh, code, now=now, control_id=ack_id, text=text, error=verdict.error))

    async def _send(self, writer: asyncio.StreamWriter, ack: bytes) -> None:
        writer.write(frame(ack))
        await writer.drain()

