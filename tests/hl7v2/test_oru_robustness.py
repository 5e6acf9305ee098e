"""Dialects real senders use (mappings.md §7) and bad input: each message stands or falls on its own."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.convert import Converter
from pipelines.context import MappingContext
from tests.conftest import TESTDATA
from tests.hl7v2.helpers import bundles, one, section_note

RAW = (TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-13-v2.7-Final-20250814-22.hl7").read_bytes()
SEGMENTS = [s for s in RAW.split(b"\r") if s]


def msg(segments: list[bytes], sep: bytes = b"\r") -> bytes:
    return sep.join(segments) + sep


def body(converter: Any, data: bytes) -> list[bytes]:
    result = converter.convert(data)
    assert not result.rejections, [r.reason for r in result.rejections]
    return [o.body for o in result.outputs]


def test_segment_terminators_and_framing_give_identical_output(converter: Any) -> None:
    reference = body(converter, RAW)
    for variant in (
        msg(SEGMENTS, b"\n"),
        msg(SEGMENTS, b"\r\n"),
        b"\xef\xbb\xbf" + RAW,  # byte-order mark
        b"\x0b" + RAW + b"\x1c\r",  # one MLLP frame
        b"FHS|^~\\&|X\rBHS|^~\\&|X\r" + RAW + b"BTS|1\rFTS|1\r",  # batch envelope
        b" ".join(SEGMENTS),  # a whole message on one line, segments separated by spaces
        b"<cr>".join(SEGMENTS),  # "<cr>" literals
        b"<SB>\n" + b"<R>\n".join(SEGMENTS) + b"<R>\n<EB>\n",  # logged MLLP (interface-engine log dialect)
    ):
        assert body(converter, variant) == reference


def test_stream_of_messages_back_to_back_and_mllp(converter: Any) -> None:
    other = (TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-02-v2.3-Final-20250814-19.hl7").read_bytes()
    plain = converter.convert(RAW + other + RAW)
    framed = converter.convert(b"".join(b"\x0b" + m + b"\x1c\r" for m in (RAW, other, RAW)))
    assert plain.messages == framed.messages == 3
    assert [o.body for o in plain.outputs] == [o.body for o in framed.outputs]
    assert plain.outputs[0].body == plain.outputs[2].body


def test_escapes_decoded_after_splitting(converter: Any) -> None:
    segs = list(SEGMENTS)
    i = next(n for n, s in enumerate(segs) if s.startswith(b"OBR"))
    fields = segs[i].split(b"|")
    fields[4] = b"71020^CHEST XRAY AP \\T\\ LATERAL^C4"
    segs[i] = b"|".join(fields)
    j = next(n for n, s in enumerate(segs) if s.startswith(b"OBX|27|"))
    segs[j] = b"OBX|27|FT|&IMP|3|IMPRESSION:\\.br\\Line \\F\\ two \\S\\ three \\E\\ \\X41\\||||||Final"
    [b] = bundles(converter.convert(msg(segs)))
    sr = one(b, "ServiceRequest")
    assert sr["code"]["concept"]["coding"][0] == {
        "system": "http://www.ama-assn.org/go/cpt",
        "code": "71020",
        "display": "CHEST XRAY AP & LATERAL",
    }
    assert section_note(b, "19005-8").startswith("IMPRESSION:\nLine | two ^ three \\ A\n")


def test_charsets(converter: Any) -> None:
    text = "Verdacht auf Läsion, Größe 4 mm; Łódź"
    segs = list(SEGMENTS)
    j = next(n for n, s in enumerate(segs) if s.startswith(b"OBX|28|"))
    msh = segs[0].split(b"|")
    # MSH-18 8859/2 (Latin-2)
    msh2 = msh + [b""] * (18 - len(msh))
    msh2[17] = b"8859/2"
    segs_l2 = [
        b"|".join(msh2),
        *segs[1:j],
        b"OBX|28|ST|&IMP|3|" + text.encode("iso8859-2") + b"||||||Final",
        *segs[j + 1 :],
    ]
    [b] = bundles(converter.convert(msg(segs_l2)))
    assert text in section_note(b, "19005-8")
    # UTF-8 undeclared, and undeclared Latin-1 bytes (legacy RIS)
    latin = "Verdacht auf Läsion, Größe 4 mm"
    for raw in (text.encode("utf-8"), latin.encode("latin-1")):
        segs_u = [*segs[:j], b"OBX|28|ST|&IMP|3|" + raw + b"||||||Final", *segs[j + 1 :]]
        [b] = bundles(converter.convert(msg(segs_u)))
        assert raw.decode("utf-8" if raw == text.encode("utf-8") else "latin-1") in section_note(b, "19005-8")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty input"),
        (b"   \r\n", "empty input"),
        (RAW[:60], "truncated message"),
        (b"\x00\x01\x02\x89PNG\r\n\x1a\n" * 20, "binary data"),
        (b"%PDF-1.4 not hl7\n", "not an HL7 v2 message"),
        (msg([s for s in SEGMENTS if not s.startswith(b"PID")]), "no PID segment"),
        (msg([s for s in SEGMENTS if not s.startswith((b"OBR", b"OBX", b"ORC"))]), "no OBR segment"),
        (b"MSH|^~\\&|A|B\rPID|1\rOBR|1\rOBX|1|TX|x||\x00\x00\x00\r", "binary data"),
    ],
)
def test_bad_input_rejected_with_reason(converter: Any, data: bytes, reason: str) -> None:
    result = converter.convert(data)
    assert not result.outputs
    assert len(result.rejections) == 1
    assert reason in result.rejections[0].reason
    assert result.rejections[0].raw == data or data.strip() == b""


def test_non_report_filtered_not_rejected(converter: Any) -> None:
    """A well-formed message that is not a report (here an ADT) is filtered with its reason: no dead letter."""
    data = b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|1|P|2.5\rPID|1||123||DOE^JOHN\r"
    result = converter.convert(data)
    assert not result.outputs and not result.rejections
    assert [(f.category, f.raw) for f in result.filtered] == [("UnsupportedMessage", data)]
    assert "is not ORU^R01" in result.filtered[0].reason


def test_oversized_message_rejected() -> None:
    small = Converter(MappingContext(max_message_bytes=1000))
    result = small.convert(RAW)
    assert result.rejections[0].reason.startswith(f"message is {len(RAW)} bytes, over the 1000-byte limit")


def test_bad_message_between_two_good_ones(converter: Any) -> None:
    bad = b"MSH|^~\\&|A|B|C|D|20250101||ORU^R01|1|P|2.5\rOBR|1|||X\r"  # no PID
    junk = b"this is not hl7 at all\r"
    other = (TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-14-v2.7-Final-20250814-31.hl7").read_bytes()
    result = converter.convert(RAW + bad + other)
    assert result.messages == 3
    assert [r.index for r in result.rejections] == [2]
    assert result.rejections[0].raw == bad
    assert [o.body for o in result.outputs] == body(converter, RAW) + body(converter, other)
    result = converter.convert(b"\x0b" + RAW + b"\x1c\r" + b"\x0b" + junk + b"\x1c\r" + b"\x0b" + other + b"\x1c\r")
    assert [r.index for r in result.rejections] == [2] and len(result.outputs) == 2


def test_outputs_carry_phi_free_keys(converter: Any) -> None:
    [out] = converter.convert(RAW).outputs
    assert out.kind == "document"
    assert out.partition_key is not None and len(out.partition_key) == 64
    assert b"620943177" not in out.partition_key.encode()
    assert out.ids == {"control_id": "2.25.219030242254076796773456242659735134587"}
    assert json.loads(out.body)["id"] == out.bundle_id


def test_unknown_time_zone_marked_uncertain(converter: Any) -> None:
    """v2 times without offset and no configured zone: default offset + uncertainPeriod ±12 h (IG SHALL)."""
    [b] = bundles(converter.convert(RAW))
    comp, dr = one(b, "Composition"), one(b, "DiagnosticReport")
    assert comp["date"] == "2025-08-14T12:06:10+00:00"  # OBR-22
    ext = comp["_date"]["extension"][0]
    assert ext["url"] == "http://hl7.org/fhir/StructureDefinition/uncertainPeriod"
    assert ext["valuePeriod"] == {"start": "2025-08-14T00:06:10+00:00", "end": "2025-08-15T00:06:10+00:00"}
    assert dr["issued"] == "2025-08-14T12:06:10+00:00" and "_issued" not in dr  # instants cannot carry it
    from pipelines.context import SenderProfile

    zoned = Converter(MappingContext(senders=(SenderProfile(sending_application="SOMERIS", timezone="-05:00",
                                                              accession_field="OBR-3"),)))  # fmt: skip
    [b] = bundles(zoned.convert(RAW))
    comp = one(b, "Composition")
    assert comp["date"] == "2025-08-14T12:06:10-05:00" and "_date" not in comp


def test_nte_comments_and_several_patients(converter: Any) -> None:
    """NTE after an OBX joins that OBX's section text; an NTE alone is never a report; each PID block
    (PATIENT_RESULT) keeps its own patient."""
    msh = b"MSH|^~\\&|RIS|H|EHR|H|20240101120000||ORU^R01|N1|P|2.5\r"
    block_a = (
        b"PID|1||A1^^^H^MR||ALPHA^ANN||19500101|F\r"
        b"OBR|1||F1|71020^CHEST^C4|||20240101110000|||||||||||ACC1||||20240101115900||CR|F\r"
        b"OBX|1|TX|&IMP|1|No acute disease.||||||F\r"
        b"NTE|1||Discussed with Dr. Who at 11:50.\r"
    )
    block_b = (
        b"PID|2||B2^^^H^MR||BETA^BOB||19600101|M\r"
        b"OBR|1||F2|71020^CHEST^C4|||20240101110000|||||||||||ACC2||||20240101115900||CR|F\r"
        b"OBX|1|TX|&GDT|1|Clear lungs.||||||F\r"
    )
    status_only = b"PID|3||C3^^^H^MR||GAMMA^CY||19700101|M\rOBR|1||F3|71020^CHEST^C4||||||||||||ACC3\rNTE|1||Pt late\r"
    result = converter.convert(msh + block_a + block_b + status_only)
    assert not result.rejections
    a, b = bundles(result)
    assert one(a, "Patient")["identifier"][0]["value"] == "A1" and one(b, "Patient")["identifier"][0]["value"] == "B2"
    assert one(a, "DiagnosticReport")["conclusion"] == "No acute disease.\nDiscussed with Dr. Who at 11:50."
    assert one(b, "DiagnosticReport")["basedOn"][0]["identifier"]["value"] == "ACC2"
    only_nte = converter.convert(msh + status_only)
    assert not only_nte.rejections and only_nte.filtered[0].reason.startswith("no report content")


def test_utf16_file_with_bom(converter: Any) -> None:
    text = RAW.decode("latin-1")
    assert body(converter, b"\xff\xfe" + text.encode("utf-16-le")) == body(converter, RAW)
