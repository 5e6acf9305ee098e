"""The worker's side of the message store: :class:`StoreSource` (the :class:`engine.sources.base.Source` protocol)
and :class:`PreparedConversions`, the hand-over of conversions made before an acknowledgement.

**Hand-over.** With ``ack: converted`` the MLLP listener converts a message before it answers (``AA`` converted,
``AR`` not a report, ``AE`` not converted). :meth:`engine.store.MessageStore.land` keeps that
:class:`engine.outcomes.Conversion` here under the new envelope id *before* the row commits, so the worker (which
sees the row only after the commit) takes it instead of converting the message a second time. The hand-over lives
in memory and is bounded (``max_bytes`` of Bundle bodies and original bytes, oldest dropped first): after a
restart, a replay, or when the worker is far behind, the worker converts the stored bytes itself, which gives the
same outputs (conversion is pure and ids are deterministic), so nothing depends on the hand-over but speed.

**Batches.** ``poll`` waits up to ``linger`` seconds (within its timeout) for a batch to fill once a first
message is there: under load the worker then makes many messages durable with one sink sync and one store commit
instead of a few per sync; when idle, the first message waits at most ``linger``. While it lingers it counts the
waiting messages ``LINGER_CHECKS`` times (a full batch goes at once), not after every store commit.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from engine.outcomes import Conversion
from engine.sources.base import Envelope
from engine.store_records import PUBLISHED, Outcome

if TYPE_CHECKING:
    from engine.store import MessageStore

__all__ = ["PreparedConversions", "StoreSource"]

#: while a batch fills (``linger``), the waiting messages are counted this many times (was: after every store
#: commit, a wake-up and a count query per commit; measured: the worker thread's CPU per message, see the README)
LINGER_CHECKS = 10


def _size(conversion: Conversion) -> int:
    return (
        sum(len(o.body) for o in conversion.outputs)
        + sum(len(r.raw) for r in conversion.rejections)
        + sum(len(f.raw) for f in conversion.filtered)
        + 256
    )


class PreparedConversions:
    """Envelope id -> :class:`Conversion` made at intake; bounded by ``max_bytes``; thread-safe.

    An entry may be a :class:`concurrent.futures.Future` while intake still converts (the MLLP listener stores
    and converts at the same time); :meth:`take` then waits for it up to ``wait`` seconds. A future resolved to
    None (conversion failed unexpectedly, or the message was not stored) means: the worker converts."""

    def __init__(self, max_bytes: int = 64 << 20, wait: float = 30.0) -> None:
        self.max_bytes = max_bytes
        self.wait = wait
        self._items: OrderedDict[str, tuple[Conversion | Future[Conversion | None], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.dropped = 0  # hand-overs evicted for room (the worker converted those itself)

    def put(self, envelope_id: str, conversion: Conversion | Future[Conversion | None], size: int = 0) -> None:
        """Keep ``conversion`` (or its future; ``size``: its expected bytes) for the worker."""
        size = _size(conversion) if isinstance(conversion, Conversion) else max(size, 256)
        with self._lock:
            if size > self.max_bytes:
                self.dropped += 1
                return
            while self._items and self._bytes + size > self.max_bytes:
                _, (_, old) = self._items.popitem(last=False)
                self._bytes -= old
                self.dropped += 1
            self._items[envelope_id] = (conversion, size)
            self._bytes += size

    def take(self, envelope_id: str, timeout: float | None = None) -> Conversion | None:
        """Remove and return the hand-over of ``envelope_id`` (None when there is none); a pending one is
        waited for up to ``timeout`` seconds (default :attr:`wait`)."""
        with self._lock:
            item = self._items.pop(envelope_id, None)
            if item is None:
                return None
            self._bytes -= item[1]
        value = item[0]
        if isinstance(value, Future):
            try:
                return value.result(self.wait if timeout is None else max(timeout, 0.0))
            except Exception:  # timed out or failed: the worker converts the stored bytes itself
                return None
        return value

    def discard(self, envelope_id: str) -> None:
        """Forget a hand-over without waiting for it (its row was rolled back)."""
        with self._lock:
            item = self._items.pop(envelope_id, None)
            if item is not None:
                self._bytes -= item[1]

    def __len__(self) -> int:
        return len(self._items)


class StoreSource:
    """The worker's view of the store: unfinished messages in id order, each handed out once until acked.

    ``pause`` makes ``poll`` return nothing; ``resume`` also forgets the envelopes handed out but not
    acknowledged, so they are polled again (the equivalent of a Kafka seek back). ``linger`` (seconds, 0 =
    return at once) lets a batch fill up (see the module docstring).
    """

    def __init__(
        self, store: MessageStore, name: str = "store", poll_interval: float = 0.2, linger: float = 0.0
    ) -> None:
        self.store = store
        self.name = name
        self._poll_interval = poll_interval
        self.linger = linger
        self._inflight: set[int] = set()
        self._paused = False
        self._lock = threading.Lock()

    def poll(self, max_records: int, timeout: float) -> Sequence[Envelope]:
        deadline = time.monotonic() + max(timeout, 0.0)
        lingered = self.linger <= 0
        while True:
            if not self._paused:
                if not lingered and 0 < self._waiting(max_records) < max_records:
                    lingered = True  # a batch has started: let it fill for up to ``linger`` (within the timeout)
                    fill = min(deadline, time.monotonic() + self.linger)
                    while (left := fill - time.monotonic()) > 0 and self._waiting(max_records) < max_records:
                        time.sleep(min(left, self.linger / LINGER_CHECKS))  # not a wake-up per store commit
                with self._lock:
                    rows = self.store.unfinished(max_records, self._inflight)
                    self._inflight.update(int(r.id) for r in rows)
                if rows:
                    return [r.envelope() for r in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self.store.wait_for_landing(min(remaining, self._poll_interval))

    def _waiting(self, limit: int) -> int:
        """Unfinished messages not handed out (at most ``limit``), without reading their bytes."""
        with self._lock:
            held = len(self._inflight)
        return max(0, self.store.count_unfinished(limit + held) - held)

    def take_prepared(self, envelopes: Sequence[Envelope]) -> list[Conversion | None]:
        """The conversions made at intake for these envelopes (None where the worker must convert)."""
        prepared = self.store.prepared
        deadline = time.monotonic() + prepared.wait  # one bound for the whole batch, not one per envelope
        return [prepared.take(env.id, deadline - time.monotonic()) for env in envelopes]

    def mark_mapped(self, items: Iterable[tuple[Envelope, Sequence[str]]]) -> None:
        self.store.mark_mapped((env.id, outputs) for env, outputs in items)

    def finish(self, outcomes: Sequence[tuple[Envelope, Outcome]]) -> None:
        self.store.finish(outcomes)
        with self._lock:
            self._inflight.difference_update(int(env.id) for env, _ in outcomes)

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        self.finish([(env, Outcome(PUBLISHED)) for env in envelopes])

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._inflight.clear()

    def close(self) -> None:
        """The store itself is closed by its owner (the runtime)."""
