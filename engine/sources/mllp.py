"""MLLP listener: HL7 v2 over TCP (optionally TLS), persist before acknowledge.

:class:`MllpListener` runs an asyncio server (public ``asyncio.start_server`` API) on its own event loop
in a background thread. Each connection is persistent and may carry any number of messages; every
message is framed by :class:`~engine.sources.mllp_framing.MllpDecoder`, stored with
``landing.land(...)`` (in a thread pool, so the loop never blocks on disk) and acknowledged only after
``land`` returned:

=============================  =====================  =====================
outcome                        original mode (MSA-1)  enhanced mode (MSA-1)
=============================  =====================  =====================
stored                         ``AA``                 ``CA``
landing raised TransientError  ``AE`` + reason        ``CE`` + reason
not HL7 (no MSH) / too large   ``AR`` + reason        ``CR`` + reason
landing raised PermanentError  ``AR`` + reason        ``CR`` + reason
=============================  =====================  =====================

In enhanced mode the accept acknowledgement follows MSH-15 (``AL``/empty: always, ``NE``: never,
``ER``: errors only, ``SU``: success only); application acknowledgements (MSH-16) are not sent by the
listener, because mapping happens later. A frame larger than ``max_message_bytes`` is rejected and
the connection closed (the rest of that frame cannot be resynchronised); bytes outside frames are
skipped; an idle connection is closed after ``idle_timeout_s``. The landed payload is the original
bytes between ``<SB>`` and ``<EB><CR>``; MSH-18 is only used to read MSH for the ACK.

The landing must be thread-safe: it is called from up to ``land_threads`` pool threads at once (one
per connection with a message in flight). :class:`engine.store.MessageStore` is, and commits
concurrent lands in one transaction (group commit), so N connections pay for one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from engine.errors import PermanentError, TransientError
from engine.sources.base import CONTENT_HL7V2, Landing
from engine.sources.hl7_ack import (
    ERROR_APPLICATION_INTERNAL,
    ERROR_SEGMENT_SEQUENCE,
    MshInfo,
    ack_control_id,
    build_ack,
    read_msh,
)
from engine.sources.mllp_framing import FrameTooLarge, MllpDecoder, frame

__all__ = ["MllpListener", "MllpSettings", "TlsSettings"]

log = logging.getLogger("engine.sources.mllp")

AckMode = Literal["original", "enhanced"]
_READ_CHUNK = 65536


def _check_keys(section: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{section}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(str(k) for k in d if k not in allowed)
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _int(section: str, key: str, value: Any, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{section}.{key}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{section}.{key}: must be {bound}, got {value}")
    return value


def _str(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{section}.{key}: expected a non-empty string, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class TlsSettings:
    """Server-side TLS: certificate chain and key (PEM), optional CA bundle to verify client certificates."""

    cert: str
    key: str
    ca: str | None = None
    require_client_cert: bool = False

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], section: str = "tls") -> TlsSettings:
        _check_keys(section, d, {"cert", "key", "ca", "require_client_cert"})
        for key in ("cert", "key"):
            if key not in d:
                raise ValueError(f"{section}.{key}: required")
        ca = d.get("ca")
        require = d.get("require_client_cert", False)
        if not isinstance(require, bool):
            raise ValueError(f"{section}.require_client_cert: expected true or false, got {require!r}")
        if require and ca is None:
            raise ValueError(f"{section}.require_client_cert: needs {section}.ca to verify client certificates")
        return cls(
            cert=_str(section, "cert", d["cert"]),
            key=_str(section, "key", d["key"]),
            ca=None if ca is None else _str(section, "ca", ca),
            require_client_cert=require,
        )

    def server_context(self) -> ssl.SSLContext:
        """Build the server ``SSLContext`` (TLS 1.2+); ValueError naming the file when one is unusable."""
        for label, path in (("cert", self.cert), ("key", self.key), ("ca", self.ca)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"tls.{label}: file not found: {path}")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
            if self.ca is not None:
                ctx.load_verify_locations(cafile=self.ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"tls: cannot load certificate/key ({self.cert}, {self.key}): {exc}") from exc
        if self.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif self.ca is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        else:
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


@dataclasses.dataclass(frozen=True, slots=True)
class MllpSettings:
    """Settings of the MLLP listener (``sources.mllp`` in the config)."""

    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 16 * 1024 * 1024
    idle_timeout_s: float = 300.0  # 0 disables
    ack_mode: AckMode = "original"
    tls: TlsSettings | None = None
    name: str = "mllp"  # source name recorded with each landed message
    land_threads: int = 16  # concurrent land() calls (one per connection at most)

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> MllpSettings:
        section = "mllp"
        _check_keys(section, d, {f.name for f in dataclasses.fields(cls)})
        kw: dict[str, Any] = {}
        if "host" in d:
            kw["host"] = _str(section, "host", d["host"])
        if "port" in d:
            kw["port"] = _int(section, "port", d["port"], low=0, high=65535)
        if "max_message_bytes" in d:
            kw["max_message_bytes"] = _int(section, "max_message_bytes", d["max_message_bytes"], low=64)
        if "idle_timeout_s" in d:
            value = d["idle_timeout_s"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{section}.idle_timeout_s: expected a number >= 0 (0 disables), got {value!r}")
            kw["idle_timeout_s"] = float(value)
        if "ack_mode" in d:
            if d["ack_mode"] not in ("original", "enhanced"):
                raise ValueError(f"{section}.ack_mode: expected 'original' or 'enhanced', got {d['ack_mode']!r}")
            kw["ack_mode"] = d["ack_mode"]
        if d.get("tls") is not None:
            kw["tls"] = TlsSettings.from_mapping(d["tls"], f"{section}.tls")
        if "name" in d:
            kw["name"] = _str(section, "name", d["name"])
        if "land_threads" in d:
            kw["land_threads"] = _int(section, "land_threads", d["land_threads"], low=1, high=256)
        return cls(**kw)


class _Connection:
    __slots__ = ("busy", "peer", "task")

    def __init__(self, peer: str, task: asyncio.Task[None]) -> None:
        self.peer = peer
        self.task = task
        self.busy = False


class MllpListener:
    """Persist-before-ACK MLLP server on a background event loop (see the module docstring)."""

    def __init__(self, settings: MllpSettings, landing: Landing) -> None:
        self.settings = settings
        self.landing = landing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False
        self._port = 0
        self.counters: dict[str, int] = dict.fromkeys(
            ("connections", "accepted", "rejected", "errors", "too_large", "idle_closed", "junk_bytes"), 0
        )

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
        self._thread = threading.Thread(target=self._run, args=(ssl_ctx,), name="mllp-listener", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._executor.shutdown(wait=False)
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
            "mllp listener on %s:%d%s",
            self.settings.host,
            self._port,
            " (TLS)" if ssl_ctx else "",
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

    # -- connections ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if self._closing:
            writer.close()
            return
        conn = _Connection(peer, task)
        self._connections[task] = conn
        self.counters["connections"] += 1
        decoder = MllpDecoder(self.settings.max_message_bytes)
        idle = self.settings.idle_timeout_s or None
        try:
            while not self._closing:
                try:
                    async with asyncio.timeout(idle):
                        data = await reader.read(_READ_CHUNK)
                except TimeoutError:
                    self.counters["idle_closed"] += 1
                    log.info("mllp: closing idle connection %s after %.0f s", peer, idle)
                    break
                if not data:
                    break
                conn.busy = True
                junk_before = decoder.skipped
                try:
                    messages = decoder.feed(data)
                except FrameTooLarge as exc:
                    for message in exc.completed:
                        await self._process(message, peer, writer)
                    self.counters["too_large"] += 1
                    log.warning("mllp: %s from %s; rejecting and closing the connection", exc, peer)
                    await self._reject(
                        read_msh(exc.head),
                        peer,
                        writer,
                        f"message exceeds {exc.limit} bytes",
                        ERROR_APPLICATION_INTERNAL,
                    )
                    break
                if decoder.skipped != junk_before:
                    self.counters["junk_bytes"] += decoder.skipped - junk_before
                    log.warning(
                        "mllp: skipped %d bytes outside MLLP frames from %s", decoder.skipped - junk_before, peer
                    )
                for message in messages:
                    await self._process(message, peer, writer)
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
            if decoder.pending:
                log.warning("mllp: connection %s closed with an unfinished frame (%d bytes)", peer, decoder.pending)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    def _codes(self, msh: MshInfo | None) -> tuple[str, str, str]:
        return ("CA", "CE", "CR") if self.settings.ack_mode == "enhanced" else ("AA", "AE", "AR")

    def _wants_ack(self, msh: MshInfo | None, success: bool) -> bool:
        if self.settings.ack_mode != "enhanced" or msh is None:
            return True
        condition = msh.accept_ack_type
        if condition == "NE":
            return False
        if condition == "ER":
            return not success
        if condition == "SU":
            return success
        return True  # AL, empty or unknown

    async def _send(self, writer: asyncio.StreamWriter, ack: bytes) -> None:
        writer.write(frame(ack))
        await writer.drain()

    async def _reject(
        self, msh: MshInfo | None, peer: str, writer: asyncio.StreamWriter, reason: str, error: tuple[str, str]
    ) -> None:
        self.counters["rejected"] += 1
        code = self._codes(msh)[2]
        if self._wants_ack(msh, False):
            now = datetime.now(UTC).astimezone()
            ack_id = ack_control_id(msh.control_id if msh else "", time.time_ns(), code)
            await self._send(writer, build_ack(msh, code, now=now, control_id=ack_id, text=reason, error=error))
        log.warning(
            "mllp: rejected message from %s (%s): %s",
            peer,
            code,
            reason,
            extra={"control_id": msh.control_id if msh else ""},
        )

    async def _process(self, message: bytes, peer: str, writer: asyncio.StreamWriter) -> None:
        msh = read_msh(message)
        if msh is None:
            await self._reject(None, peer, writer, "not an HL7 v2 message (no MSH segment)", ERROR_SEGMENT_SEQUENCE)
            return
        received_ns = time.time_ns()
        received = datetime.fromtimestamp(received_ns / 1e9, UTC)
        headers = {
            "hl7.control-id": msh.control_id,
            "hl7.message-type": msh.message_type.replace(msh.encoding_characters[0], "^"),
            "hl7.version": msh.version,
            "source.endpoint": peer,
            "received.at": received.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        if msh.charset:
            headers["hl7.charset"] = msh.charset
        ok_code, error_code, reject_code = self._codes(msh)
        land = functools.partial(
            self.landing.land, message, content_type=CONTENT_HL7V2, source=self.settings.name, headers=headers
        )
        loop = asyncio.get_running_loop()
        reason = ""
        try:
            envelope_id = await loop.run_in_executor(self._executor, land)
        except TransientError as exc:
            # The sender sees a generic reason; details (paths, hosts) stay in our log.
            reason = "message not stored (temporary storage failure), retry later"
            log.warning("mllp: landing failed for control id %s from %s: %s", msh.control_id, peer, exc)
        except PermanentError as exc:  # can never be stored (e.g. above Kafka's max_request_size): do not resend
            reason = "message not stored (the message store cannot take it, e.g. too large)"
            error_code = reject_code
            log.error("mllp: landing rejected control id %s from %s: %s", msh.control_id, peer, exc)
        except Exception as exc:  # unknown: never acknowledge, report loudly, keep serving
            self.counters["errors"] += 1
            reason = f"message not stored: internal error ({exc.__class__.__name__})"
            log.error("mllp: unexpected landing error for control id %s", msh.control_id, exc_info=True)
        code = error_code if reason else ok_code
        if reason:
            self.counters["rejected"] += 1
        else:
            self.counters["accepted"] += 1
            log.debug("mllp: landed %s as %s from %s", msh.control_id, envelope_id, peer)
        if self._wants_ack(msh, not reason):
            ack_id = ack_control_id(msh.control_id, received_ns, code)
            ack = build_ack(
                msh, code, now=received.astimezone(), control_id=ack_id, text=reason, error=ERROR_APPLICATION_INTERNAL
            )
            await self._send(writer, ack)
