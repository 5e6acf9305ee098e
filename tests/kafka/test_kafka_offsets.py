"""OffsetTracker: contiguous watermark, gaps, out-of-order confirmations, revoke/re-assign epochs."""

from __future__ import annotations

import pytest

from engine.kafka.offsets import OffsetOrderError, OffsetTracker

P0, P1 = ("raw", 0), ("raw", 1)


def tracked(offsets: list[int], tp: tuple[str, int] = P0) -> tuple[OffsetTracker[tuple[str, int]], int]:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.assign([tp])
    epochs = {tracker.track(tp, o) for o in offsets}
    assert len(epochs) == 1
    epoch = epochs.pop()
    assert epoch is not None
    return tracker, epoch


def test_nothing_committable_until_the_first_offset_is_confirmed() -> None:
    tracker, epoch = tracked([10, 11, 12])
    assert tracker.commit_offsets() == {}
    tracker.ack(P0, 11, epoch)
    tracker.ack(P0, 12, epoch)
    assert tracker.commit_offsets() == {}, "10 is unfinished: committing 13 would lose it"
    tracker.ack(P0, 10, epoch)
    assert tracker.commit_offsets() == {P0: 13}


def test_gap_holds_the_watermark_and_out_of_order_acks_fill_it() -> None:
    tracker, epoch = tracked([0, 1, 2, 3, 4, 5])
    for offset in (0, 1, 3, 5):
        tracker.ack(P0, offset, epoch)
    assert tracker.commit_offsets() == {P0: 2}
    assert tracker.pending() == 2
    tracker.ack(P0, 4, epoch)
    assert tracker.commit_offsets() == {P0: 2}
    tracker.ack(P0, 2, epoch)
    assert tracker.commit_offsets() == {P0: 6}
    assert tracker.pending() == 0


def test_offsets_skipped_by_the_log_do_not_block_the_watermark() -> None:
    # compaction / transaction markers: only delivered offsets count
    tracker, epoch = tracked([3, 7, 8, 20])
    for offset in (3, 7, 8, 20):
        tracker.ack(P0, offset, epoch)
    assert tracker.commit_offsets() == {P0: 21}


def test_commit_is_reported_once_and_never_goes_backwards() -> None:
    tracker, epoch = tracked([0, 1, 2])
    tracker.ack(P0, 0, epoch)
    assert tracker.commit_offsets() == {P0: 1}
    tracker.mark_committed({P0: 1})
    assert tracker.commit_offsets() == {}
    tracker.ack(P0, 0, epoch)  # confirmed twice: harmless
    assert tracker.commit_offsets() == {}
    with pytest.raises(OffsetOrderError):
        tracker.mark_committed({P0: 0})


def test_delivery_must_be_monotonic_within_an_assignment() -> None:
    tracker, _ = tracked([5, 6])
    with pytest.raises(OffsetOrderError):
        tracker.track(P0, 6)
    with pytest.raises(OffsetOrderError):
        tracker.track(P0, 2)


def test_ack_of_an_offset_never_delivered_is_a_bug() -> None:
    tracker, epoch = tracked([5, 6])
    with pytest.raises(ValueError, match="never delivered"):
        tracker.ack(P0, 9, epoch)


def test_revoked_partition_is_never_committed_and_late_acks_are_ignored() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.assign([P0, P1])
    e0 = tracker.track(P0, 0)
    e1 = tracker.track(P1, 0)
    assert e0 is not None and e1 is not None
    tracker.ack(P1, 0, e1)
    tracker.revoke([P0])
    assert tracker.is_revoked(P0)
    assert tracker.ack(P0, 0, e0) is False
    assert tracker.commit_offsets() == {P1: 1}
    assert tracker.track(P0, 1) is None, "records of a revoked partition are not handed out"
    tracker.mark_committed({P0: 1})  # a commit racing the revoke is ignored
    assert tracker.state(P0) is not None and tracker.state(P0).committed is None  # type: ignore[union-attr]


def test_reassignment_starts_a_new_epoch_and_old_acks_do_not_leak_into_it() -> None:
    tracker, old = tracked([0, 1, 2])
    tracker.ack(P0, 0, old)
    tracker.revoke([P0])
    tracker.assign([P0])  # e.g. the same partition comes back after a rebalance, resumes at committed 0
    new = tracker.track(P0, 0)
    assert new is not None and new != old
    tracker.track(P0, 1)
    assert tracker.ack(P0, 1, old) is False, "confirmation from the previous assignment must not count"
    assert tracker.commit_offsets() == {}
    assert tracker.ack(P0, 0, new) and tracker.ack(P0, 1, new)
    assert tracker.commit_offsets() == {P0: 2}


def test_partitions_are_independent() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.assign([P0, P1])
    e0 = tracker.track(P0, 0)
    tracker.track(P0, 1)
    e1 = tracker.track(P1, 100)
    tracker.track(P1, 101)
    assert e0 is not None and e1 is not None
    tracker.ack(P1, 101, e1)
    tracker.ack(P0, 0, e0)
    assert tracker.commit_offsets() == {P0: 1}
    tracker.ack(P1, 100, e1)
    assert tracker.commit_offsets() == {P0: 1, P1: 102}
