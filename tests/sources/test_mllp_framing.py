"""MLLP framing and ACK building without sockets (the listener tests cover them over TCP as well)."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime

import hl7
import pytest

from engine.sources.hl7_ack import (
    Verdict,
    acknowledgements,
    build_ack,
    build_batch_ack,
    is_batch,
    python_codec,
    read_msh,
)
from engine.sources.mllp_framing import FrameTooLarge, Garbage, MllpDecoder, frame

MSG = b"MSH|^~\\&|RIS|HOSP|ENGINE|HUB|20250101120000||ORU^R01^ORU_R01|CTRL-1|P|2.5.1\rPID|1||123\r"


def test_messages_split_across_chunks_and_junk() -> None:
    stream = b"\r\n" + frame(MSG) + b"xx" + frame(MSG.replace(b"CTRL-1", b"CTRL-2")) + b"\n"
    decoder = MllpDecoder(1024)
    out: list[bytes | Garbage] = []
    for i in range(len(stream)):  # one byte at a time, incl. EB and CR in separate chunks
        out += decoder.feed(stream[i : i + 1])
    assert out == [MSG, Garbage(b"xx", 2, "outside-frame"), MSG.replace(b"CTRL-1", b"CTRL-2")]
    assert decoder.flush() == [] and decoder.skipped == 3 and decoder.pending == 0


def test_end_block_ends_the_message_and_no_byte_run_is_lost() -> None:
    decoder = MllpDecoder(1024)
    assert decoder.feed(b"\x0bMSH|a\x1c") == [b"MSH|a"]  # EB ends the frame; the CR is optional
    assert decoder.feed(b"\r\x0bMSH|b\x1c\x0bMSH|c") == [b"MSH|b"]  # a late CR is the trailer, not junk
    assert decoder.pending == 5 and decoder.in_frame
    assert decoder.feed(b"\x0b" + MSG + b"\x1c\r") == [Garbage(b"MSH|c", 5, "abandoned-frame"), MSG]
    assert decoder.feed(b"MSH|d\x1c\r") == [Garbage(b"MSH|d", 5, "no-start-block")]
    assert decoder.feed(b"\x0bMSH|e") == [] and decoder.flush() == [Garbage(b"MSH|e", 5, "unterminated-frame")]
    assert decoder.feed(b"junk") == [] and decoder.flush() == [Garbage(b"junk", 4, "outside-frame")]
    capped = MllpDecoder(1024, keep_bytes=3)
    assert capped.feed(b"abcdef\x0b") == [Garbage(b"abc", 6, "outside-frame")]
    assert decoder.skipped == 0


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


@pytest.mark.parametrize(
    "header",
    [
        b"MSH|^|RIS|HOSP|ENG|HUB|2025||ORU^R01|C9|P|2.3\r",  # MSH-2 declares only the component separator
        b"MSH|^~\\&#!?|RIS|HOSP|ENG|HUB|2025||ORU^R01|C9|P|2.3\r",  # six characters (the mapper ignores 5+)
        b"MSH\t^~\\&\tRIS\tHOSP\tENG\tHUB\t2025\t\tORU^R01\tC9\tP\t2.3\r",  # TAB field separator
    ],
)
def test_read_msh_accepts_what_the_mapper_converts(header: bytes) -> None:
    """The listener reads every MSH the mapper's split accepts (else an AR "not an HL7 v2 message" for a
    message `engine map` converts)."""
    msh = read_msh(header + b"PID|1||123\r")
    assert msh is not None
    assert (msh.control_id, msh.trigger_event, msh.version, msh.sending_application) == ("C9", "R01", "2.3", "RIS")
    ack = hl7.parse(build_ack(msh, "AA", now=datetime(2025, 1, 1, tzinfo=UTC), control_id="A1").decode())
    assert str(ack.segment("MSA")[2]) == "C9"


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


@pytest.mark.parametrize(
    ("msh15", "msh16", "stored", "applied", "codes"),
    [
        ("", "", "A", "A", ["AA"]),  # original mode: one ACK, the application verdict
        ("", "", "A", "R", ["AR"]),
        ("", "", "A", "E", ["AE"]),
        ("", "", "E", None, ["AE"]),  # storage failed: the commit verdict
        ("", "", "A", None, ["AA"]),  # ack: stored
        ("AL", "", "A", "R", ["CA"]),  # enhanced, MSH-16 empty: no application ACK
        ("AL", "AL", "A", "R", ["CA", "AR"]),
        ("NE", "AL", "A", "A", ["AA"]),
        ("NE", "NE", "A", "E", []),
        ("ER", "ER", "A", "A", []),
        ("ER", "ER", "A", "E", ["AE"]),
        ("ER", "SU", "E", None, ["CE"]),  # not stored: no application ACK whatever MSH-16 says
        ("SU", "SU", "A", "A", ["CA", "AA"]),
        ("SU", "ER", "R", None, []),
        ("", "SU", "A", "A", ["CA", "AA"]),  # MSH-16 valued alone: enhanced, empty MSH-15 counts as AL
    ],
)
def test_acknowledgement_rules(msh15: str, msh16: str, stored: str, applied: str | None, codes: list[str]) -> None:
    """HL7 v2.5.1 2.9.2 / 2.9.3 and table 0155 (AL always, NE never, ER on error only, SU on success only)."""
    msh = read_msh(MSG.replace(b"|2.5.1\r", f"|2.5.1|||{msh15}|{msh16}\r".encode()))
    assert msh is not None and (msh.accept_ack_type, msh.application_ack_type) == (msh15, msh16)
    verdict = None if applied is None else Verdict(applied, "why")
    assert [code for code, _ in acknowledgements(msh, Verdict(stored, "why"), verdict)] == codes


def test_batch_ack_echoes_batch_ids_and_swaps_sender() -> None:
    batch = b"BHS|^~\\&|RIS|HOSP|ENGINE|HUB|20250101||||B-9\r" + MSG + b"BTS|1\r"
    now = datetime(2025, 1, 1, tzinfo=UTC)
    ack = build_ack(read_msh(MSG), "AA", now=now, control_id="A1")
    out = build_batch_ack(batch, [ack], now=now, control_id="X1").split(b"\r")
    assert out[0] == b"BHS|^~\\&|ENGINE|HUB|RIS|HOSP|20250101000000+0000||||X1|B-9"
    assert out[1].startswith(b"MSH|") and out[2] == b"MSA|AA|CTRL-1" and out[3] == b"BTS|1" and out[4] == b""
    assert is_batch(b"\xef\xbb\xbf FHS|") and is_batch(batch) and not is_batch(MSG)
