"""Streaming readers: listener logs (truncated and duplicated messages), MLLP captures, batches, block edges."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from engine.backfill import formats
from engine.backfill.formats import Er7Stream, LoggedMllp, MllpCapture, detect_format, frames_of, message_key
from engine.convert import Converter
from tests.conftest import TESTDATA

LOGS = TESTDATA / "hl7v2-washu-scout" / "raw-logs"
MSG = (TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-13-v2.7-Final-20250814-22.hl7").read_bytes()
SEGS = [s for s in MSG.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r") if s]


def _logged(segments: list[bytes], control: bytes = b"", eb: bool = True) -> bytes:
    body = b"".join(s + b"<R>\n" for s in segments)
    if control:
        body = body.replace(b"|ORU^R01|", b"|ORU^R01|" + control, 1)
    return (
        b"2025-08-14 07:03:41.1419|INFO|Raw.Application.TcpServer.TcpServer|\n<SB>\n"
        + body
        + (b"<EB><R>\n\n" if eb else b"")
    )


def test_scout_logs_frames_and_outcomes() -> None:
    """Every frame of the real log archive: log lines skipped, junk frames rejected, repeats recognised."""
    conv = Converter()
    frames = {p.name: list(frames_of(p, 1 << 24)) for p in sorted(LOGS.iterdir())}
    assert len(frames["extraction__20250814.log"]) == 60
    dup = frames["postgres__2007__20071021.log"]
    assert len(dup) == 2 and message_key(dup[0].raw) == message_key(dup[1].raw)  # "<EB><R>" vs "<EB>"
    assert not any(f.raw.startswith(b"20") for fs in frames.values() for f in fs)  # no log header lines
    empty = conv.convert(frames["postgres__2019__20190106.log"][0].raw)
    assert empty.rejections[0].reason == "empty message"
    bad = conv.convert(frames["postgres__2016__20160829.log"][0].raw)
    assert bad.rejections and "not an HL7 v2 message" in bad.rejections[0].reason
    for f in frames["extraction__20250814.log"]:
        result = conv.convert(f.raw)
        assert result.messages == 1 and not result.rejections


def test_truncated_frame_ends_at_next_start(tmp_path: Path) -> None:
    """A frame without <EB> (the listener died mid-message) ends at the next <SB>; both are kept."""
    cut = _logged(SEGS[:3], eb=False)  # MSH, PID, ... then nothing
    log = tmp_path / "x.log"
    log.write_bytes(cut + _logged(SEGS) + _logged(SEGS))
    frames = list(frames_of(log, 1 << 24))
    assert len(frames) == 3
    assert frames[0].raw.endswith(SEGS[2] + b"<R>\n") and b"<EB>" not in frames[0].raw
    conv = Converter()
    truncated = conv.convert(frames[0].raw)
    assert not truncated.outputs and (truncated.rejections or truncated.filtered)
    assert len(conv.convert(frames[1].raw).outputs) == 1
    assert message_key(frames[1].raw) == message_key(frames[2].raw)


@pytest.mark.parametrize("block", [7, 64, 1000])
def test_block_edges_do_not_change_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    data = _logged(SEGS, b"1") + b"noise line\n" + _logged(SEGS, b"2") + _logged(SEGS[:4], b"3", eb=False)
    log = tmp_path / "l.log"
    log.write_bytes(data)
    whole = [f.raw for f in frames_of(log, 1 << 24)]
    monkeypatch.setattr(formats, "BLOCK", block)
    assert [f.raw for f in frames_of(log, 1 << 24)] == whole and len(whole) == 3
    mllp = tmp_path / "c.bin"
    mllp.write_bytes(
        b"".join(b"\x0b" + MSG.replace(b"|ORU^R01|", b"|ORU^R01|" + bytes([48 + i]), 1) + b"\x1c\r" for i in range(3))
        + b"trailing junk"
    )
    framed = [f.raw for f in frames_of(mllp, 1 << 24)]
    assert len(framed) == 4 and framed[-1] == b"trailing junk"
    batch = tmp_path / "b.hl7"
    one = MSG.rstrip(b"\r\n") + b"\r"
    batch.write_bytes(b"FHS|^~\\&|A\rBHS|^~\\&|A\r" + one + one + b"BTS|2\rFTS|1\r")
    plain = [f.raw for f in frames_of(batch, 1 << 24)]
    assert len(plain) == 2 and plain[0].startswith(b"FHS") and plain[1].startswith(b"MSH")
    assert [len(Converter().convert(r).outputs) for r in plain] == [1, 1]


def test_detection_and_oversized_frames() -> None:
    assert isinstance(detect_format(b"x|INFO|\n<SB>\nMSH|"), LoggedMllp)
    assert isinstance(detect_format(b"\x0bMSH|^~\\&\x1c\r"), MllpCapture)
    assert isinstance(detect_format(b"MSH|^~\\&|"), Er7Stream)
    chunks = list(Er7Stream().frames(io.BytesIO(b"x" * 2500), 1000))
    assert [len(c) for c in chunks] == [1000, 1000, 500]  # bounded, never the whole file at once


def test_special_files_are_not_read(tmp_path: Path) -> None:
    """A named pipe in an input folder (or named directly) would block the reader forever: never opened."""
    import os

    from engine.backfill.formats import iter_files

    (tmp_path / "a.hl7").write_bytes(b"MSH|^~\\&|A\r")
    os.mkfifo(tmp_path / "pipe")
    assert [f.path.name for f in iter_files([tmp_path])] == ["a.hl7"]
    assert list(iter_files([tmp_path / "pipe"])) == []


@pytest.mark.parametrize(
    "msh",
    [
        b"MSH|^|",  # MSH-2 declaring only the component separator (the others default)
        b"MSH|^~\\&#$|",  # more encoding characters than v2.7 defines
        b"MSH|^~\\&\r\n|",  # the MSH line wrapped right after MSH-2
        b"MSH\t^~\\&\t",  # a TAB as the field separator
    ],
)
def test_a_message_the_mapper_converts_is_never_skipped_as_a_non_message_file(tmp_path: Path, msh: bytes) -> None:
    """The whole-file skip (no message start) must not hide a report the HL7 v2 mapper converts."""
    assert MSG.startswith(b"MSH|^~\\&|")
    body = MSG[len(b"MSH|^~\\&|") :]
    if msh == b"MSH|^|":
        body = body.replace(b"~", b"").replace(b"\\", b"").replace(b"&", b"")
    if msh.startswith(b"MSH\t"):
        body = body.replace(b"\t", b" ").replace(b"|", b"\t")
    data = msh + body
    assert Converter().convert(data).outputs  # the mapper converts it
    path = tmp_path / "report.hl7"
    path.write_bytes(data)
    frames = list(frames_of(path, 1 << 20))
    assert [f.skip for f in frames] == [None] and Converter().convert(frames[0].raw).outputs
    assert formats.NOT_A_MESSAGE_FILE  # still the reason for files without any message start
    prose = tmp_path / "notes.txt"
    prose.write_bytes(b"MSH-3 is the sending application\nMSH: header\n")
    assert [f.skip for f in frames_of(prose, 1 << 20)] == [formats.NOT_A_MESSAGE_FILE]
