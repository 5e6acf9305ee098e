"""The per-message half of the MLLP listener (:mod:`engine.sources.mllp`): store, convert, acknowledge, and the
rejections at the door. :class:`MllpIntake` is the base of :class:`engine.sources.mllp.MllpListener`, which adds
the event loop, the server socket and the connections; the behaviour (persist before ACK, the acknowledgement
table, batches, door rejections) is documented there.

With ``ack: converted`` a message is stored and converted at the same time and acknowledged when both are done.
A landing that keeps conversions (the message store, ``engine.store_source.PreparedConversions``) gets a future
of the result together with the row, so the worker takes it instead of converting the message again. Where the
service has conversion processes (:class:`engine.pooled.PooledConverter`), each message goes at once to the
listener's own conversion process through :class:`engine.conversion_channel.ConversionChannel` (driven from the
event loop: no thread on the ACK's path; one message per request, so the first of several concurrent messages is
answered after its own conversion, not after the whole group's).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from engine.conversion_channel import ConversionChannel
from engine.convert import Converter
from engine.errors import PermanentError, TransientError
from engine.outcomes import Conversion
from engine.pooled import PooledConverter
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
from engine.sources.listener_settings import MllpSettings
from engine.sources.loop_bridge import LoopBridge
from engine.sources.mllp_framing import FrameTooLarge, Garbage, frame
from engine.sources.mllp_verdicts import (
    CONVERSION_BUG,
    NOT_HL7,
    batch_response,
    batch_verdicts,
    full_conversion,
    merge,
    slim_conversion,
    verdicts,
)

__all__ = ["MllpIntake"]

log = logging.getLogger("engine.sources.mllp")

_OCTETS = "application/octet-stream"
_LAND_TIMEOUT_S = 60.0  # a commit that takes longer is answered AE (retry later)


def _log_start_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:  # the next message starts it again
        log.error("mllp: the conversion process for ACKs did not start: %s", task.exception())


class MllpIntake:
    """Store, convert and acknowledge one framed item at a time (runs on the listener's event loop)."""

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
        self._executor: ThreadPoolExecutor | None = None
        self._pool: ProcessPoolExecutor | None = None
        # ack: converted with conversion processes: the listener's own one, driven from its event loop
        # (engine.conversion_channel); started by MllpListener on its loop (_start_channel)
        self._channel: ConversionChannel | None = None
        self._ack_clock: tuple[int, datetime] = (-1, datetime.now(UTC))  # see _ack_time
        self._bridge: LoopBridge | None = None  # store commits -> the event loop, see _committed
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "connections", "accepted", "rejected", "errors", "too_large", "idle_closed", "junk_bytes",
                "converted", "filtered", "failed", "refused_peers", "garbage",
            ),
            0,
        )  # fmt: skip

    def _start_channel(self, loop: asyncio.AbstractEventLoop) -> None:
        """With ``ack: converted`` and the worker's conversion processes (:class:`engine.pooled.PooledConverter`;
        not with ``convert_processes`` > 0, which has its own pool), start the listener's conversion process on
        ``loop`` now, so that the first message does not wait for it."""
        if self.settings.ack != "converted" or self._pool is not None:
            return
        if not isinstance(self.converter, PooledConverter):
            return
        self._channel = ConversionChannel(self.converter.context, self.converter.model)
        loop.create_task(self._channel.start()).add_done_callback(_log_start_failure)

    async def _close_channel(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def _blocking(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

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
        try:
            land_async = getattr(self.landing, "land_async", None)
            if callable(land_async):  # the message store: await its commit without holding a thread
                future = land_async(payload, content_type=CONTENT_HL7V2, source=self.settings.name, headers=headers,
                                    **extra)  # fmt: skip
                envelope_id = await self._committed(future)
            else:
                land = functools.partial(
                    self.landing.land, payload, content_type=CONTENT_HL7V2, source=self.settings.name,
                    headers=headers, **extra,
                )  # fmt: skip
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

    def _committed(self, future: Future[str]) -> asyncio.Future[str]:
        """Await a store commit through the loop bridge (one wake-up per group commit, not per message); after
        ``_LAND_TIMEOUT_S`` it fails with :class:`TransientError` and the commit is cancelled if not yet run."""
        loop = asyncio.get_running_loop()
        if self._bridge is None or self._bridge.loop is not loop:
            self._bridge = LoopBridge(loop)
        mirror = self._bridge.watch(future)

        def expire() -> None:
            if not mirror.done():
                future.cancel()
                mirror.set_exception(TransientError("message store: commit timed out"))

        timer = loop.call_later(_LAND_TIMEOUT_S, expire)
        mirror.add_done_callback(lambda _: timer.cancel())
        return mirror

    async def _store_and_convert(
        self, payload: bytes, headers: dict[str, str], label: str, peer: str, converted: bool
    ) -> tuple[Verdict, Conversion | None]:
        """Land ``payload`` and, with ``ack: converted``, convert it at the same time (the ACK waits for both).
        The message store gets a future of the conversion with the row, resolved here, so its worker takes the
        result instead of converting a second time (``engine.store_source.PreparedConversions``)."""
        if not converted:
            return await self._store(payload, headers, label, peer), None
        # through the channel the request's future is awaited as is (no task per message); others run in a task
        direct = self._channel is not None
        conversion_task: asyncio.Future[list[Conversion]] | asyncio.Future[Conversion | None] = (
            self._submit_direct(payload) if direct else asyncio.ensure_future(self._convert(payload, label))
        )
        hand_over: Future[Conversion | None] | None = Future() if self._hand_over else None
        conversion: Conversion | None = None
        try:
            stored = await self._store(payload, headers, label, peer, hand_over)
            if direct:
                conversion = await self._direct_result(conversion_task, label)  # type: ignore[arg-type]
            else:
                conversion = await conversion_task  # type: ignore[assignment]
        finally:
            if hand_over is not None:  # always resolved: the worker may be waiting for it
                hand_over.set_result(conversion)
            if not conversion_task.done():
                conversion_task.cancel()
        return stored, conversion

    def _conversion_failed(self, label: str) -> None:
        """Count and log (with the traceback) a conversion for the ACK that raised; the ACK says ``AE``."""
        self.counters["errors"] += 1
        log.error("mllp: conversion for the ACK failed unexpectedly (control id %s)", label, exc_info=True)

    def _submit_direct(self, payload: bytes) -> asyncio.Future[list[Conversion]]:
        assert self._channel is not None
        try:
            return self._channel.submit([payload])
        except Exception as exc:  # the channel is closed (the listener is stopping)
            failed: asyncio.Future[list[Conversion]] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _direct_result(self, pending: asyncio.Future[list[Conversion]], label: str) -> Conversion | None:
        try:
            result = await pending
        except Exception:  # a converter bug or a lost process: the message is stored, the worker converts it
            self._conversion_failed(label)
            return None
        return result[0]

    async def _convert(self, payload: bytes, label: str) -> Conversion | None:
        result: Conversion
        try:
            if self._pool is not None:  # another process: the GIL stays with the event loop and the stores
                loop = asyncio.get_running_loop()
                convert = full_conversion if self._hand_over else slim_conversion  # Bundles only for the worker
                result = await loop.run_in_executor(self._pool, convert, payload)
            else:
                result = await self._blocking(functools.partial(self.converter.convert, payload))
        except Exception:  # a converter bug: the message is stored, the worker will meet it too
            self._conversion_failed(label)
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
        now = self._ack_time()
        for code, verdict in acknowledgements(msh, stored, applied):
            ack_id = ack_control_id(msh.control_id if msh else "", time.time_ns(), code)
            text = verdict.text if verdict.kind != "A" else ""
            await self._send(writer, build_ack(msh, code, now=now, control_id=ack_id, text=text, error=verdict.error))

    def _ack_time(self) -> datetime:
        """Local time for MSH-7 of ACKs, to the second (one datetime per second: ``build_ack`` memoises its text)."""
        second = int(time.time())
        if second != self._ack_clock[0]:
            self._ack_clock = (second, datetime.fromtimestamp(second, UTC).astimezone())
        return self._ack_clock[1]

    async def _send(self, writer: asyncio.StreamWriter, ack: bytes) -> None:
        writer.write(frame(ack))
        await writer.drain()
