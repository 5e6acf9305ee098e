"""Per-partition offset tracking: which offset may be committed without losing anything.

Records of a partition are delivered in offset order, but the worker may confirm them out of order (an
earlier message still retrying while later ones are published). The only safe commit is the
*contiguous-done watermark*: the highest delivered offset such that every offset delivered before it is
confirmed too; Kafka is then told ``watermark + 1`` (the next offset to read). Offsets that the log skips
(compaction, transaction markers) never block the watermark, because only *delivered* offsets count.

Rebalances: the consumer's listener runs on kafka-python's IO thread and only calls :meth:`revoke`
(under the lock, no I/O). A revoked partition's pending state is dropped and nothing is ever committed for
it again; confirmations that arrive later for its old records are ignored (they carry the old *epoch*).
A partition assigned again starts a new epoch from scratch; its new owner resumes at the committed offset.

The tracker is generic over the partition key (``TopicPartition`` in production) and does no I/O, so it is
unit-tested without a broker.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["OffsetOrderError", "OffsetTracker", "PartitionState"]

P = TypeVar("P", bound=Hashable)


class OffsetOrderError(RuntimeError):
    """A partition delivered an offset not above the previous one within one assignment (a bug or a seek)."""


@dataclass(slots=True)
class PartitionState:
    epoch: int
    delivered: deque[int] = field(default_factory=deque)  # delivered, not yet below the watermark
    done: set[int] = field(default_factory=set)  # confirmed offsets still above a gap
    last_delivered: int | None = None
    watermark: int | None = None  # highest contiguous confirmed offset
    committed: int | None = None  # the "next offset" last committed (watermark + 1)
    revoked: bool = False


class OffsetTracker(Generic[P]):
    """Thread-safe: ``track``/``ack``/``commit_offsets`` on the poll thread, ``revoke`` on the IO thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[P, PartitionState] = {}
        self._epochs: dict[P, int] = {}

    # -- assignment -----------------------------------------------------------------------------------
    def assign(self, partitions: Iterable[P]) -> None:
        """(Re)assigned partitions start a new epoch with no pending state."""
        with self._lock:
            for tp in partitions:
                self._new_state(tp)

    def revoke(self, partitions: Iterable[P]) -> None:
        """Mark revoked and drop pending state; never commit for these until assigned again."""
        with self._lock:
            for tp in partitions:
                state = self._parts.get(tp)
                if state is None:
                    state = self._new_state(tp)
                state.revoked = True
                state.delivered.clear()
                state.done.clear()
                state.watermark = None

    def _new_state(self, tp: P) -> PartitionState:
        epoch = self._epochs.get(tp, 0) + 1
        self._epochs[tp] = epoch
        state = PartitionState(epoch=epoch)
        self._parts[tp] = state
        return state

    # -- delivery and confirmation --------------------------------------------------------------------
    def track(self, tp: P, offset: int) -> int | None:
        """Register a delivered record; return its epoch, or None when the partition is revoked (skip it)."""
        with self._lock:
            state = self._parts.get(tp)
            if state is None:
                state = self._new_state(tp)  # manual assignment: no listener told us
            if state.revoked:
                return None
            if state.last_delivered is not None and offset <= state.last_delivered:
                raise OffsetOrderError(
                    f"partition {tp}: offset {offset} delivered after {state.last_delivered} in one assignment"
                )
            state.last_delivered = offset
            state.delivered.append(offset)
            return state.epoch

    def ack(self, tp: P, offset: int, epoch: int) -> bool:
        """Confirm one delivered offset. Returns False (ignored) for a revoked partition or an old epoch."""
        with self._lock:
            state = self._parts.get(tp)
            if state is None or state.revoked or state.epoch != epoch:
                return False
            if offset not in state.delivered and offset not in state.done:
                if state.watermark is not None and offset <= state.watermark:
                    return True  # confirmed twice: harmless
                raise ValueError(f"partition {tp}: offset {offset} was never delivered")
            state.done.add(offset)
            while state.delivered and state.delivered[0] in state.done:
                head = state.delivered.popleft()
                state.done.discard(head)
                state.watermark = head
            return True

    # -- commits --------------------------------------------------------------------------------------
    def commit_offsets(self) -> dict[P, int]:
        """Next offsets (watermark + 1) that advanced since the last commit, for owned partitions only."""
        with self._lock:
            out: dict[P, int] = {}
            for tp, state in self._parts.items():
                if state.revoked or state.watermark is None:
                    continue
                nxt = state.watermark + 1
                if state.committed is None or nxt > state.committed:
                    out[tp] = nxt
            return out

    def mark_committed(self, offsets: dict[P, int]) -> None:
        """Record a successful commit; ignored for partitions revoked meanwhile."""
        with self._lock:
            for tp, nxt in offsets.items():
                state = self._parts.get(tp)
                if state is None or state.revoked:
                    continue
                if state.committed is not None and nxt < state.committed:
                    raise OffsetOrderError(f"partition {tp}: commit {nxt} below the committed {state.committed}")
                state.committed = nxt

    # -- introspection --------------------------------------------------------------------------------
    def pending(self) -> int:
        """Delivered but not yet confirmed, over all owned partitions."""
        with self._lock:
            return sum(len(s.delivered) - len(s.done) for s in self._parts.values() if not s.revoked)

    def owned(self) -> list[P]:
        """Partitions currently assigned (seen and not revoked)."""
        with self._lock:
            return [tp for tp, s in self._parts.items() if not s.revoked]

    def is_revoked(self, tp: P) -> bool:
        with self._lock:
            state = self._parts.get(tp)
            return state is not None and state.revoked

    def state(self, tp: P) -> PartitionState | None:
        with self._lock:
            return self._parts.get(tp)
