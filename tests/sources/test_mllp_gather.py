"""``ack: converted`` with conversion processes: the messages of concurrent connections share one hand-over. A group
goes at once when every open connection has a message in it (each waits for its ACK, so none can join), else
when the gathering time is up; every message gets its own result."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from engine.convert import Converter
from engine.outcomes import Conversion
from engine.sources.listener_settings import MllpSettings
from engine.sources.mllp_intake import MllpIntake


class RecordingPool(Converter):
    """The ``submit_many`` seam of :class:`engine.pooled.PooledConverter` (which has its own real-process test in
    tests/runtime/test_store_handover.py), converting in this process and recording each group."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[list[bytes]] = []

    def submit_many(self, payloads: Sequence[bytes]) -> Future[list[Conversion]]:
        self.groups.append(list(payloads))
        future: Future[list[Conversion]] = Future()
        future.set_result([self.convert(p) for p in payloads])
        return future


class Intake(MllpIntake):
    def __init__(self, connections: int) -> None:
        self.pool = RecordingPool()
        super().__init__(MllpSettings.from_mapping({"port": 0}), landing=None, converter=self.pool)  # type: ignore[arg-type]
        self.connections = connections

    def _open_connections(self) -> int:
        return self.connections


def _message(n: int) -> bytes:
    return f"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|C{n}|P|2.5\rPID|1\r".encode()


def test_group_goes_at_once_when_every_connection_waits() -> None:
    async def main() -> list[Any]:
        intake = Intake(connections=3)
        first = [intake._gathered(_message(i)) for i in range(3)]
        assert [len(g) for g in intake.pool.groups] == [3]  # handed over without waiting for the timer
        assert intake._gather_timer is None
        return list(await asyncio.gather(*first))

    results = asyncio.run(main())
    assert len(results) == 3 and all(isinstance(r, Conversion) for r in results)
    assert all(r.filtered for r in results)  # each message got its own result (ADT: not a report)


def test_group_waits_for_the_timer_while_a_connection_may_still_send() -> None:
    async def main() -> tuple[list[int], list[int]]:
        intake = Intake(connections=3)
        pending = [intake._gathered(_message(i)) for i in range(2)]
        before = [len(g) for g in intake.pool.groups]
        await asyncio.gather(*pending)  # resolved once the gathering time is up
        return before, [len(g) for g in intake.pool.groups]

    before, after = asyncio.run(main())
    assert before == [] and after == [2]


def test_without_a_connection_count_the_timer_decides() -> None:
    async def main() -> list[int]:
        intake = Intake(connections=0)
        intake._open_connections = lambda: MllpIntake._open_connections(intake)  # type: ignore[method-assign]
        futures = [intake._gathered(_message(i)) for i in range(5)]
        assert intake.pool.groups == []
        await asyncio.gather(*futures)
        return [len(g) for g in intake.pool.groups]

    assert asyncio.run(main()) == [5]
