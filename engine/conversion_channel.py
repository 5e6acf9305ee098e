"""One conversion process driven straight from an asyncio event loop, for ACKs that wait for a conversion.

The MLLP listener with ``ack: converted`` hands each message to a conversion process and answers when the
result is back, so every hand-over is on the ACK's critical path. Through a
:class:`concurrent.futures.ProcessPoolExecutor` a request passes two threads of the service's interpreter on the
way out (the executor's manager thread, the call queue's feeder thread) and one on the way back (the manager
thread, then ``call_soon_threadsafe``); each needs the GIL that the event loop, the store writer and the worker
also want. Measured with 4 busy connections (``bench/bench_service.py``, groups of ~3.4 messages): 0.46 ms median
from ``submit`` to the conversion process starting and 0.28 ms back, against 1.5 ms of conversion.

:class:`ConversionChannel` starts ``python -m engine.conversion_child`` with :func:`asyncio.create_subprocess_exec`
(the standard library's asyncio subprocess pipes) and talks to it with length-prefixed pickles: the event loop
writes a request itself (no thread) and a reader task on the same loop resolves the request's future when the
answer arrives. Requests are answered in order (one process, FIFO), so a deque of futures pairs them up.

Shapes. Request: ``[payload bytes, ...]``; answer: ``("ok", [Conversion, ...])`` (same order) or
``("error", exception)`` for an exception raised by the converter (a bug; the process keeps serving). Frame:
8-byte big-endian length, then the pickle. The first frame to the child is ``(MappingContext, model)``.

Failures. A conversion exception fails that request's future with it. A child that exits (killed, out of
memory) fails every pending future with :class:`ConversionProcessGone`; the next request starts a new child.
The child exits by itself when its stdin closes (this process stopped or died). Memory: in-flight requests are
bounded by the caller (the listener has at most one message per open connection in flight).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import pickle
import struct
import sys
from collections.abc import Sequence

from engine.errors import EngineError
from engine.outcomes import Conversion
from pipelines.context import MappingContext

__all__ = ["HEADER", "ConversionChannel", "ConversionProcessGone"]

log = logging.getLogger("engine.conversion")

#: Frame header: the pickle's length, 8 bytes big-endian.
HEADER = struct.Struct(">Q")


class ConversionProcessGone(EngineError):
    """The conversion process exited with requests in flight (their messages are stored; the worker converts
    them again)."""


class ConversionChannel:
    """A conversion process for one event loop. :meth:`submit` from that loop only; :meth:`close` awaits the
    child's exit. Not thread-safe (everything runs on the loop)."""

    def __init__(self, context: MappingContext | None = None, model: str = "document") -> None:
        self.context = context or MappingContext()
        self.model = model
        self._proc: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queued: list[bytes] = []  # frames written once the child is up
        self._waiting: collections.deque[asyncio.Future[list[Conversion]]] = collections.deque()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before the first start or after it exited)."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self) -> None:
        """Start the child now (else the first :meth:`submit` does); returns once it reads requests."""
        if self._proc is None or self._proc.returncode is not None:
            if self._starting is None:
                self._starting = asyncio.get_running_loop().create_task(self._spawn())
            await asyncio.shield(self._starting)

    def submit(self, payloads: Sequence[bytes]) -> asyncio.Future[list[Conversion]]:
        """Convert ``payloads`` (in order) in the child; the future resolves on this loop with one
        :class:`Conversion` per payload, or fails (see the module docstring). Raises :class:`RuntimeError`
        after :meth:`close`."""
        if self._closed:
            raise RuntimeError("conversion channel closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Conversion]] = loop.create_future()
        body = pickle.dumps(list(payloads), protocol=pickle.HIGHEST_PROTOCOL)
        self._waiting.append(future)
        frame = HEADER.pack(len(body)) + body
        proc = self._proc
        if proc is not None and proc.returncode is None and self._starting is None and proc.stdin is not None:
            proc.stdin.write(frame)  # buffered by the transport: never blocks the loop
        else:
            self._queued.append(frame)
            if self._starting is None:
                self._starting = loop.create_task(self._spawn())
        return future

    async def _spawn(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "engine.conversion_child",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
            )  # fmt: skip
        except BaseException as exc:  # cannot start a process: fail what waits, the next request tries again
            self._starting = None
            self._fail_all(ConversionProcessGone(f"conversion process could not start: {exc}"))
            raise
        assert proc.stdin is not None and proc.stdout is not None
        setup = pickle.dumps((self.context, self.model), protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.write(HEADER.pack(len(setup)) + setup)
        for frame in self._queued:
            proc.stdin.write(frame)
        self._queued.clear()
        self._proc = proc
        self._starting = None
        self._reader = asyncio.get_running_loop().create_task(self._read(proc))
        log.debug("conversion process %d started", proc.pid)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        stdout = proc.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(HEADER.size)
                body = await stdout.readexactly(HEADER.unpack(head)[0])
                kind, value = pickle.loads(body)
                future = self._waiting.popleft()
                if future.done():  # the caller gave up (cancelled): nothing to deliver
                    continue
                if kind == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(value if isinstance(value, BaseException) else RuntimeError(str(value)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        code = await proc.wait()
        if self._waiting and not self._closed:
            log.error("conversion process %d exited (code %s) with %d request(s) in flight", proc.pid, code,
                      len(self._waiting))  # fmt: skip
        self._fail_all(ConversionProcessGone(f"conversion process exited (code {code})"))
        if self._proc is proc:
            self._proc = None

    def _fail_all(self, exc: BaseException) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the child: close its stdin (it exits after the request in hand), kill it after ``timeout`` s."""
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(BaseException):
                await self._starting
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader
        self._fail_all(ConversionProcessGone("conversion channel closed"))

    def __repr__(self) -> str:
        return f"ConversionChannel(pid={self.pid}, in_flight={len(self._waiting)})"
