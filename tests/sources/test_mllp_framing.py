"""MLLP framing and ACK building without sockets (the listener tests cover them over TCP as well)."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime

import hl7
import pytest

from engine.sources.hl7_ack import build_ack, python_codec, read_msh
from engine.sources.mllp_framing import FrameTooLarge, MllpDecoder, frame

MSG = b"MSH|^~\\&|RIS|HOSP|ENGINE|HUB|20250101120000||ORU^R01^ORU_R01|CTRL-1|P|2.5.1\rPID|1||123\r"


def test_messages_split_across_chunks_and_junk() -> None:
    stream = b"\r\n" + frame(MSG) + b"xx" + frame(MSG.replace(b"CTRL-1", b"CTRL-2"))
    decoder = MllpDecoder(1024)
    out: list[bytes] = []
    for i in range(len(stream)):  # one byte at a time, incl. EB and CR in separate chunks
        out += decoder.feed(stream[i : i + 1])
    assert out == [MSG, MSG.replace(b"CTRL-1", b"CTRL-2")]
    assert decoder.skipped == 4 and decoder.pending == 0


def test_eb_without_cr_is_content_and_restart_abandons_partial_frame() -> None:
    decoder = MllpDecoder(1024)
    assert decoder.feed(b"\x0bMSH|a\x1cb") == []  # EB not followed by CR does not end the frame
    assert decoder.pending == 7
    assert decoder.feed(b"\x0b" + MSG + b"\x1c\r") == [MSG]  # a new SB drops the unfinished frame
    assert decoder.skipped == 7


def test_too_large_frame_raises_with_head_and_completed_messages() -> None:
    decoder = MllpDecoder(len(MSG))
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(frame(MSG) + b"\x0b" + MSG + b"OBX|1|" * 10)
    assert info.value.completed == [MSG]
    assert info.value.head.startswith(b"MSH|") and info.value.limit == len(MSG)
    assert decoder.pending == 0
    with pytest.raises(FrameTooLarge):
        MllpDecoder(10).feed(frame(MSG))  # complete, but larger than the limit


def test_read_msh_fields_bom_and_non_standard_delimiters() -> None:
    msh = read_msh(b"\xef\xbb\xbf" + MSG)
    assert msh is not None
    assert (msh.control_id, msh.message_type, msh.trigger_event, msh.version) == (
        "CTRL-1",
        "ORU^R01^ORU_R01",
        "R01",
        "2.5.1",
    )
    assert (msh.sending_application, msh.receiving_facility, msh.charset, msh.codec) == ("RIS", "HUB", "", "iso8859-1")
    odd = read_msh(b"MSH#$~\\&#RIS$X#HOSP#ENG#HUB#2025##ORU$R01#C9#P#2.4\r")
    assert odd is not None and odd.trigger_event == "R01" and odd.version == "2.4"
    ack = hl7.parse(build_ack(odd, "AA", now=datetime(2025, 1, 1, tzinfo=UTC), control_id="A1").decode())
    assert str(ack.segment("MSH")[5]) == "RIS^X"  # copied with the ACK's own component separator
    assert read_msh(b"PID|1||123\r") is None and read_msh(b"MSH") is None and read_msh(b"MSHA12345") is None


def test_charset_table() -> None:
    def same(charset: str, codec: str) -> bool:
        return codecs.lookup(python_codec(charset)).name == codecs.lookup(codec).name

    assert same("8859/1", "iso8859-1")
    assert same("UNICODE UTF-8", "utf-8")
    assert same("ISO IR192", "utf-8")
    assert same("8859/15", "iso8859-15")
    assert same("", "iso8859-1") and same("NO-SUCH", "iso8859-1")
    assert same("UNICODE UTF-16", "iso8859-1")  # cannot be read byte-wise


def test_reject_ack_without_msh_and_escaping() -> None:
    ack = build_ack(None, "AR", now=datetime(2025, 1, 1, tzinfo=UTC), control_id="A2", text="bad | input ^ here")
    parsed = hl7.parse(ack.decode())
    assert str(parsed.segment("MSA")[1]) == "AR" and str(parsed.segment("MSA")[2]) == ""
    assert b"bad \\F\\ input \\S\\ here" in ack
    assert str(parsed.segment("MSH")[7]) == "20250101000000+0000"
