"""The hot path's shortcuts give exactly what the plain rules give (ORU speed work, issue 10): each fast check
is compared with the straightforward definition on generated inputs, including the awkward ones (LF and CRLF
line ends, byte-order marks, batch envelopes, glued segments, wrapped lines, non-ASCII segment ids)."""

from __future__ import annotations

import random

from pipelines.common.model import Ident
from pipelines.common.sections import LONGEST_HEADING, section_for_heading
from pipelines.hl7v2 import datatypes as dt
from pipelines.hl7v2.er7 import (
    _KNOWN_IDS,
    Delimiters,
    _glue_patterns,
    _has_continuations,
    _join_continuations,
    _maybe_glued,
    parse_message,
)
from pipelines.hl7v2.fields import repetitions, unescape
from pipelines.hl7v2.framing import _BOM, _SEGMENT_STARTS, _starts
from pipelines.hl7v2.observations import _text_lines


def _starts_reference(data: bytes) -> list[tuple[int, bytes]]:
    """MSH/FHS/BHS/BTS/FTS at the start of the data or of a line, followed by a separator (one find per name)."""
    found: list[tuple[int, bytes]] = []
    for name in _SEGMENT_STARTS:
        pos = data.find(name)
        while pos >= 0:
            prev = data[pos - 1 : pos] if pos else b"\n"
            nxt = data[pos + 3 : pos + 4]
            if prev in (b"\r", b"\n") and nxt and not nxt.isalnum() and nxt not in (b"\r", b"\n"):
                found.append((pos, name))
            pos = data.find(name, pos + 3)
    if data.startswith(_BOM):
        found += [(0, name) for name in _SEGMENT_STARTS if data.startswith(name, 3)]
    return sorted(found)


_PIECES = [b"MSH|^~\\&|A", b"FHS|^~\\&", b"BHS|", b"BTS|1", b"FTS|1", b"OBX|1|TX|||MSH text", b"MSHX|", b"MSH",
           b"PID|1", b"xMSH|", b"BTS", b" FHS|", b"\xc3\xa4MSH|", _BOM]  # fmt: skip
_ENDS = [b"\r", b"\n", b"\r\n", b"\n\r", b"", b"\r\r"]


def test_message_starts_match_the_find_per_name_definition() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        data = b"".join(rng.choice(_PIECES) + rng.choice(_ENDS) for _ in range(rng.randint(1, 8)))
        assert _starts(data) == _starts_reference(data), data


def _glued_reference(text: str, fs: str) -> bool:
    prefilter, _ = _glue_patterns(fs)
    return any(_KNOWN_IDS.fullmatch(text, m.start() - 3, m.start()) for m in prefilter.finditer(text))


_TEXTS = ["OBX|1|TX|||Brain MRI|", " OBX|", "\tPID|", "<cr>OBR|", "<CR>ZDS|", " MRI|", " 123|", " ZX9|", "ä OBX|",
          "  NTE|", ">OBX|", "<cr>obx|", " OBX^", "x", " ", "|", "€ ORC|", "<Cr>PV1|"]  # fmt: skip


def test_glued_segment_prefilter_never_misses_a_glued_segment() -> None:
    rng = random.Random(5)
    for fs in ("|", "#", "!"):
        for _ in range(3000):
            text = "MSH|^~\\&|\r" + "".join(rng.choice(_TEXTS) for _ in range(rng.randint(1, 6))).replace("|", fs)
            if _glued_reference(text, fs):
                assert _maybe_glued(text, fs), text


def test_glued_segments_are_still_split() -> None:
    msg = parse_message("MSH|^~\\&|RIS|H|||20250101||ORU^R01|1|P|2.5 PID|1||123 OBR|1<cr>OBX|1|TX|||Brain MRI|")
    assert [seg[0] for seg in msg.segments] == ["MSH", "PID", "OBR", "OBX"]
    assert msg.segments[3][5] == "Brain MRI"


_LINES = ["OBX|1|TX|||a", "PID|1", "wrapped text", "", "abc", "abcd", "ÄBC|x", "ÄB1|", "12A|", "OBX", "OBX^1",
          "  indented", "NTE|1||x"]  # fmt: skip


def test_continuation_check_matches_the_join() -> None:
    rng = random.Random(3)
    for _ in range(3000):
        lines = ["MSH|^~\\&|A"] + [rng.choice(_LINES) for _ in range(rng.randint(0, 6))]
        if _join_continuations(lines, "|") != lines:
            assert _has_continuations("\r".join(lines), "|"), lines


def _text_lines_reference(raw5: str, vtype: str, d: Delimiters, charset: str) -> list[str]:
    lines: list[str] = []
    for rep in repetitions(raw5, d) or [""]:
        if vtype in ("CE", "CWE", "CNE", "CF"):
            parts = rep.split(d.component)
            value = unescape(parts[1], d, charset) if len(parts) > 1 else ""
        else:
            value = unescape(rep, d, charset)
        lines.extend(value.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return [line.rstrip() for line in lines]


def test_text_row_fast_paths_match_the_full_decoding() -> None:
    rng = random.Random(9)
    pieces = ["Heart ", "normal.", "~", "\\.br\\", "\t", "\n", "\r", " ", "\x07", "é", "^", "\\E\\", "IMPRESSION:"]
    for clean in (False, True):
        d = Delimiters(clean=clean)
        for _ in range(2000):
            raw5 = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
            if clean:
                raw5 = raw5.replace("\x07", "")  # a clean message holds no control character but TAB/CR/LF
            for vtype in ("FT", "TX", "CE"):
                # the one-line shortcut keeps a line break of a wrapped segment inside the line, as before
                if vtype != "CE" and "~" not in raw5 and "\\" not in raw5 and (clean or raw5.isprintable()):
                    assert _text_lines(raw5, vtype, d, "latin-1") == [raw5.rstrip()]
                else:
                    assert _text_lines(raw5, vtype, d, "latin-1") == _text_lines_reference(raw5, vtype, d, "latin-1")


def test_prose_lines_skipped_by_the_reader_are_never_headings() -> None:
    rng = random.Random(1)
    words = ["Findings", "IMPRESSION", ":", ".", " ", "\t", "\u00a0", "normal", "x" * 30, "Comparison", "-", "x" * 9]
    for _ in range(5000):
        line = "".join(rng.choice(words) for _ in range(rng.randint(1, 8))).rstrip()
        colon = line.find(":")
        prose = bool(line) and not line[0].isspace() and (
            colon > 40 or (colon < 0 and len(line) > LONGEST_HEADING and line[-1] != ".")
        )
        if prose:
            assert section_for_heading(line) is None, line


def test_cached_xcn_gives_a_new_person_each_time() -> None:
    d = Delimiters()
    first = dt.xcn("D1458834^WILLIAMS^TARA^L.^^^M.D.", d, "urn:x", "urn:x/practitioner")
    assert first is not None
    first.given.append("changed")
    first.identifiers.append(Ident(system="urn:y", value="1"))
    again = dt.xcn("D1458834^WILLIAMS^TARA^L.^^^M.D.", d, "urn:x", "urn:x/practitioner")
    assert again is not None and again is not first
    assert again.given == ["TARA", "L."] and again.suffix == ["M.D."]
    assert [(i.system, i.value) for i in again.identifiers] == [("urn:x/practitioner", "D1458834")]
    assert dt.xcn("^UnkPERSON^UnkPERSON^^^^", d, "urn:x", "urn:x/practitioner") is not None


def test_one_dtm_parse_serves_every_reading() -> None:
    # the parse is cached and shared: padding an instant's time must not leak into the other readings
    for _ in range(2):
        assert dt.dtm_instant("202508141030", "+01:00") == "2025-08-14T10:30:00+01:00"
        assert dt.dtm_datetime("202508141030", "+01:00") == "2025-08-14T10:30:00+01:00"
        assert dt.dtm_date("202508141030") == "2025-08-14"
        assert dt.dtm_instant("20250814", "+00:00") is None  # no time of day: never midnight
        assert dt.dtm_datetime("20250814", "+00:00") == "2025-08-14"
