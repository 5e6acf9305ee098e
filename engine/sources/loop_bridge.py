"""Hand results of other threads to an event loop in groups: one loop wake-up per burst, not per result.

``asyncio.wrap_future`` costs one ``call_soon_threadsafe`` (a write to the loop's self-pipe, a read and a handle
on the loop) per future. The message store's writer resolves a whole group commit at once, so the MLLP listener
awaits its landings through a :class:`LoopBridge`: the first result of a burst schedules one drain on the loop,
the others only join the list the drain takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["LoopBridge"]

T = TypeVar("T")


class LoopBridge:
    """Await :class:`concurrent.futures.Future` objects on ``loop`` with one wake-up per burst of results."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Any], Future[Any]]] = []

    def watch(self, future: Future[T]) -> asyncio.Future[T]:
        """An asyncio future (of ``loop``) with ``future``'s result, exception or cancellation. Cancelling the
        returned future cancels ``future`` too when it has not started (e.g. a store commit not yet run)."""
        mirror: asyncio.Future[T] = self.loop.create_future()
        mirror.add_done_callback(lambda m: future.cancel() if m.cancelled() else None)
        future.add_done_callback(lambda done: self._resolved(mirror, done))
        return mirror

    def _resolved(self, mirror: asyncio.Future[Any], done: Future[Any]) -> None:  # any thread
        with self._lock:
            self._ready.append((mirror, done))
            first = len(self._ready) == 1
        if first:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:  # on the loop
        with self._lock:
            ready, self._ready = self._ready, []
        for mirror, done in ready:
            if mirror.done():
                continue
            if done.cancelled():
                mirror.cancel()
                continue
            exc = done.exception()
            if exc is not None:
                mirror.set_exception(exc)
            else:
                mirror.set_result(done.result())
