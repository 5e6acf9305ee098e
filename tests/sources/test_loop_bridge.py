"""LoopBridge: results of another thread reach the event loop with their value, exception or cancellation, a burst
of them in one loop wake-up; a mirror given up on cancels a commit that has not started."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from engine.errors import TransientError
from engine.sources.loop_bridge import LoopBridge


def test_results_exceptions_and_cancellation_reach_the_loop() -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        bridge = LoopBridge(loop)
        sources: list[Future[Any]] = [Future() for _ in range(5)]
        mirrors = [bridge.watch(f) for f in sources]
        wakeups = 0
        drain = bridge._drain

        def counted() -> None:
            nonlocal wakeups
            wakeups += 1
            drain()

        bridge._drain = counted  # type: ignore[method-assign]

        def resolve() -> None:  # another thread, like the store's writer after a group commit
            sources[0].set_result("1")
            sources[1].set_result("2")
            sources[2].set_exception(TransientError("disk full"))
            sources[3].set_result("4")
            assert sources[4].cancel()

        writer = threading.Thread(target=resolve)
        writer.start()
        writer.join()
        outcomes = await asyncio.gather(*mirrors, return_exceptions=True)
        assert wakeups == 1  # one drain for the whole burst
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes[:2] == ["1", "2"] and outcomes[3] == "4"
    assert isinstance(outcomes[2], TransientError) and "disk full" in str(outcomes[2])
    assert isinstance(outcomes[4], asyncio.CancelledError)


def test_a_mirror_given_up_cancels_a_pending_source_and_an_already_done_one_resolves() -> None:
    async def main() -> None:
        bridge = LoopBridge(asyncio.get_running_loop())
        pending: Future[str] = Future()
        mirror = bridge.watch(pending)
        mirror.cancel()
        await asyncio.sleep(0)
        assert pending.cancelled()  # a commit not yet run is skipped by the writer
        done: Future[str] = Future()
        done.set_result("x")
        assert await bridge.watch(done) == "x"
        running: Future[str] = Future()
        assert running.set_running_or_notify_cancel()
        late = bridge.watch(running)
        late.cancel()
        await asyncio.sleep(0)
        assert not running.cancelled()  # already running: it commits; nobody waits for the answer
        running.set_result("y")
        await asyncio.sleep(0.05)  # the drain skips the mirror that was given up

    asyncio.run(main())


def test_the_landing_timeout_is_a_transient_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """MllpIntake._committed: a commit slower than the landing timeout answers TransientError and is cancelled."""
    import engine.sources.mllp_intake as intake
    from engine.sources.listener_settings import MllpSettings

    monkeypatch.setattr(intake, "_LAND_TIMEOUT_S", 0.05)
    listener = intake.MllpIntake(MllpSettings.from_mapping({"port": 0}), landing=object())  # type: ignore[arg-type]

    async def main() -> Future[str]:
        slow: Future[str] = Future()
        with pytest.raises(TransientError, match="timed out"):
            await listener._committed(slow)
        return slow

    assert asyncio.run(main()).cancelled()
