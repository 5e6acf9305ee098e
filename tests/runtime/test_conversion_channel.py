"""The listener's conversion process (:mod:`engine.conversion_channel`, :mod:`engine.conversion_child`): a real
child process driven from an asyncio loop. Results equal the in-process converter's, in order; a converter
exception fails only its request; a killed child fails what was in flight and the next request starts another;
``close`` ends the child. The MLLP path through it: ``tests/runtime/test_store_handover.py``."""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import signal

import pytest

from engine.cmd_map import load_mapping_context
from engine.conversion_channel import HEADER, ConversionChannel, ConversionProcessGone
from engine.conversion_child import serve
from engine.convert import Converter
from engine.outcomes import Conversion
from pipelines.context import MappingContext
from tests.sources.source_helpers import TESTDATA

BULK = TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


def _messages(n: int) -> list[bytes]:
    lines = [line.rstrip(b"\r") for line in BULK.read_bytes().split(b"\n") if line.startswith(b"MSH")]
    return lines[:n]


def _bodies(conversions: list[Conversion]) -> list[list[bytes]]:
    return [[o.body for o in c.outputs] for c in conversions]


def _frame(value: object) -> bytes:
    body = pickle.dumps(value)
    return HEADER.pack(len(body)) + body


def test_results_equal_the_converter_in_request_order() -> None:
    context = load_mapping_context(None)
    messages = _messages(12)
    expected = Converter(context)

    async def main() -> list[list[Conversion]]:
        channel = ConversionChannel(context)
        try:
            early = [channel.submit([m]) for m in messages[:4]]  # queued before the child is up
            await channel.start()
            late = [channel.submit(messages[4:9]), channel.submit(messages[9:])]
            return list(await asyncio.gather(*early, *late))
        finally:
            await channel.close()

    results = asyncio.run(main())
    flat = [c for group in results for c in group]
    assert [len(g) for g in results] == [1, 1, 1, 1, 5, 3]
    assert _bodies(flat) == _bodies([expected.convert(m) for m in messages])
    assert sum(len(c.outputs) for c in flat) > 0


def test_a_converter_exception_fails_only_its_request() -> None:
    message = _messages(1)[0]

    async def main() -> tuple[BaseException | None, list[Conversion]]:
        channel = ConversionChannel(load_mapping_context(None))
        try:
            broken = channel.submit([None])  # type: ignore[list-item]  # the converter raises on it (a "bug")
            fine = channel.submit([message])
            error = None
            try:
                await broken
            except Exception as exc:
                error = exc
            return error, await fine
        finally:
            await channel.close()

    error, fine = asyncio.run(main())
    assert isinstance(error, AttributeError)
    assert fine[0].outputs


def test_a_killed_process_fails_what_is_in_flight_and_the_next_request_starts_another() -> None:
    messages = _messages(40)

    async def main() -> tuple[list[BaseException | list[Conversion]], int, int | None, list[Conversion]]:
        channel = ConversionChannel(load_mapping_context(None))
        try:
            await channel.start()
            first = channel.pid
            assert first is not None
            in_flight = [channel.submit(messages * 25) for _ in range(3)]  # about a second of work each
            await asyncio.sleep(0.1)
            os.kill(first, signal.SIGKILL)
            outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
            again = await channel.submit(messages[:2])
            return outcomes, first, channel.pid, again
        finally:
            await channel.close()

    outcomes, first, second, again = asyncio.run(main())
    assert all(isinstance(o, ConversionProcessGone) for o in outcomes)
    assert second is not None and second != first
    assert len(again) == 2 and again[0].outputs


def test_close_ends_the_child_and_refuses_requests() -> None:
    async def main() -> tuple[int, ConversionChannel]:
        channel = ConversionChannel(MappingContext())
        await channel.start()
        pid = channel.pid
        assert pid is not None
        await channel.close()
        return pid, channel

    pid, channel = asyncio.run(main())
    assert channel.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped

    async def after() -> None:
        channel.submit([b"MSH|^~\\&|A"])

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(after())


def test_child_protocol_answers_in_order_and_stops_at_end_of_input() -> None:
    message = _messages(1)[0]
    stream = io.BytesIO(
        _frame((MappingContext(), "document")) + _frame([message]) + _frame([None]) + _frame([b"", message])
        + HEADER.pack(99) + b"partial"  # a writer that died mid-frame: the child stops quietly
    )  # fmt: skip
    out = io.BytesIO()
    assert serve(stream, out) == 0
    data, answers = out.getvalue(), []
    while data:
        size = HEADER.unpack(data[: HEADER.size])[0]
        answers.append(pickle.loads(data[HEADER.size : HEADER.size + size]))
        data = data[HEADER.size + size :]
    assert [kind for kind, _ in answers] == ["ok", "error", "ok"]
    assert len(answers[0][1]) == 1 and answers[0][1][0].outputs
    assert isinstance(answers[1][1], AttributeError)
    assert len(answers[2][1]) == 2 and answers[2][1][1].outputs
