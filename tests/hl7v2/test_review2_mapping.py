"""Mapping faults found by the second review (README "Mapping review (second tryout)"): variants of the field
reports and of mappings.md §7 the first tryout did not cover. Each test names the right value and its rule and
fails on the engine before its fix."""

from __future__ import annotations

from typing import Any

import pytest

from tests.hl7v2.helpers import one, resources
from tests.hl7v2.test_field_reports import convert_one, message

GDT = "OBX|2|TX|71020&GDT|1|Heart size normal.||||||F"
IMP = "OBX|3|TX|71020&IMP|1|No acute process.||||||F"
UNCERTAIN = "http://hl7.org/fhir/StructureDefinition/uncertainPeriod"


def _times(data: bytes, msh7: str, obr7: str, obr22: str) -> bytes:
    """The helper's message with other MSH-7, OBR-7 and OBR-22 values."""
    return (
        data.replace(b"20261130101500+0100", msh7.encode())
        .replace(b"20261130093000+0100", obr7.encode())
        .replace(b"20261130101000+0100", obr22.encode())
    )


# --- the sender's zone: any offset the sender's own times declare (HL7 v2.5.1 2.A.22) --------------------------


@pytest.mark.parametrize(
    ("msh7", "obr7", "obr22", "issued", "effective"),
    [
        # OBR-7 carries the offset, MSH-7 and OBR-22 do not. Was: issued 10:10+00:00 (one hour off) and nothing
        # marked uncertain, because OBR-7 had an offset.
        ("20261130101500", "20261130093000+0100", "20261130101000", "2026-11-30T10:10:00+01:00",
         "2026-11-30T09:30:00+01:00"),
        # OBR-22 carries it: OBR-7 is in the same (sender's) zone. Was: 09:30:00+00:00.
        ("20261130101500", "20261130093000", "20261130101000-0500", "2026-11-30T10:10:00-05:00",
         "2026-11-30T09:30:00-05:00"),
        # MSH-7 carries it (the first tryout's rule, kept).
        ("20261130101500+0100", "20261130093000", "20261130101000", "2026-11-30T10:10:00+01:00",
         "2026-11-30T09:30:00+01:00"),
    ],
)  # fmt: skip
def test_a_time_without_offset_takes_the_offset_the_senders_times_declare(
    converter: Any, msh7: str, obr7: str, obr22: str, issued: str, effective: str
) -> None:
    """2.A.22: a DTM without an offset is in the sender's local zone; the offset any of the sender's own times
    (MSH-7, OBR-22, OBR-7) declares is that zone's, so the others take it; nothing is marked uncertain."""
    b = convert_one(converter, _times(message(GDT, IMP), msh7, obr7, obr22))
    dr = one(b, "DiagnosticReport")
    assert dr["issued"] == issued and b["timestamp"] == issued
    assert dr["effectiveDateTime"] == effective
    assert "_effectiveDateTime" not in dr and "_date" not in one(b, "Composition")


def test_no_offset_anywhere_is_the_default_and_marked_uncertain(converter: Any) -> None:
    """No offset in any time and no profile zone: the deployment default, and every source dateTime carries the
    IG's uncertainPeriod (eu-imaging.md §2.5) - the tryout's behaviour, kept."""
    b = convert_one(converter, _times(message(GDT, IMP), "20261130101500", "20261130093000", "20261130101000"))
    dr = one(b, "DiagnosticReport")
    assert dr["issued"] == "2026-11-30T10:10:00+00:00"
    assert dr["_effectiveDateTime"]["extension"][0]["url"] == UNCERTAIN


# --- OBX-11 / OBR-25 W and D as word statuses (table 0085 / 0123; mappings.md §7.14) ----------------------------


@pytest.mark.parametrize("word", ["Deleted", "Wrong", "WRONG PATIENT", "Entered in error", "entered-in-error"])
def test_word_status_withdrawn_rows_are_left_out(converter: Any, word: str) -> None:
    """A sender writing word statuses (``Final``) writes W/D as words too: such a row is withdrawn like ``W``.
    Was: its text in the section, note and anchor finding."""
    rows = (
        f"OBX|2|TX|71020&GDT|1|Posted to the wrong chart.||||||{word}",
        "OBX|3|TX|71020&GDT|1|Corrected text: lungs clear.||||||Final",
        "OBX|4|TX|71020&IMP|1|Normal.||||||Final",
    )
    b = convert_one(converter, message(*rows, obr25="Corrected"))
    assert "wrong chart" not in str(b)
    assert [n["text"] for n in one(b, "DiagnosticReport")["note"]] == ["Corrected text: lungs clear.", "Normal."]


def test_every_row_withdrawn_by_word_is_filtered(converter: Any) -> None:
    result = converter.convert(
        message("OBX|2|TX|71020&GDT|1|Wrong chart.||||||Deleted", "OBX|3|TX|71020&IMP|1|X.||||||Deleted")
    )
    assert not result.outputs and not result.rejections
    [filtered] = result.filtered
    assert filtered.reason == "all report content retracted (OBX-11 W/D)"


@pytest.mark.parametrize("word", ["Deleted", "Entered in Error", "Wrong Patient"])
def test_obr25_word_withdrawal_publishes_no_text(converter: Any, word: str) -> None:
    """OBR-25 ``Deleted``: the report is entered-in-error, its text never published (as OBR-25 W/D). Was: an
    unknown word, so the status came from OBX-11 (``final``) and the withdrawn text was published."""
    b = convert_one(converter, message(GDT, IMP, obr25=word))
    dr = one(b, "DiagnosticReport")
    assert dr["status"] == "entered-in-error"
    assert "Heart size normal" not in str(b) and "No acute process" not in str(b)
    assert all(o["status"] == "entered-in-error" for o in resources(b, "Observation"))


# --- vital signs in a report (FHIR R5 core vital-signs profile) -------------------------------------------------


def test_vital_sign_result_carries_the_vital_signs_category(converter: Any) -> None:
    """FHIR R5: an Observation coded with a vital-sign LOINC code (body weight 29463-7, heart rate 8867-4, ...)
    SHALL conform to the core vital-signs profile, whose category slice VSCat is 1..1. Was: no category, three
    official-validator errors (VSCat missing, result not matching ObservationFindingEuImaging, Bundle slice)."""
    rows = (
        "OBX|2|NM|29463-7^Body weight^LN||80|kg^^UCUM|||||F",
        "OBX|3|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||F",
        "OBX|4|NM|11348-0^Something else^LN||3|cm^^UCUM|||||F",
        GDT,
    )
    b = convert_one(converter, message(*rows))
    by_code = {o["code"]["coding"][0]["code"]: o for o in resources(b, "Observation") if "valueQuantity" in o}
    vs = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
    for code in ("29463-7", "8867-4"):
        [category] = by_code[code]["category"]
        assert {k: category["coding"][0][k] for k in vs} == vs
    assert "category" not in by_code["11348-0"]


# --- ED Base64 without its padding (RFC 4648 §3.2) ---------------------------------------------------------------


def test_ed_base64_without_padding_is_read(converter: Any) -> None:
    """Padding left out of Base64 data is implied by the length: the document is read, not dead-lettered. Was:
    rejected "not valid Base64". A length that cannot be Base64 (4n+1) is still rejected."""
    import base64

    pdf = b"%PDF-1.4\n" + bytes(range(256)) + b"\n%%EOF"  # 272 bytes: Base64 ends in "=="
    data = base64.b64encode(pdf).decode().rstrip("=")
    b = convert_one(converter, message(GDT, f"OBX|3|ED|PDF^Report^L||^application^pdf^Base64^{data}||||||F"))
    [form] = one(b, "DiagnosticReport")["presentedForm"]
    assert base64.b64decode(form["data"]) == pdf
    bad = converter.convert(message(GDT, f"OBX|3|ED|PDF^Report^L||^application^pdf^Base64^{data}AAA||||||F"))
    assert not bad.outputs and "not valid Base64" in bad.rejections[0].reason


# --- one ED document sent in several OBX rows (OBX-4 sub-ID, 7.4.2.4) ---------------------------------------------

_PDF = b"%PDF-1.4\n" + bytes(range(256)) * 2 + b"\n%%EOF"


def _ed(n: int, sub: str, data: str) -> str:
    return f"OBX|{n}|ED|PDF^Report^L|{sub}|^application^pdf^Base64^{data}||||||F"


def _pieces(kind: str) -> list[str]:
    import base64

    text = base64.b64encode(_PDF).decode()
    if kind == "text split anywhere":
        return [text[:401], text[401:]]
    if kind == "each piece encoded":
        return [base64.b64encode(_PDF[:301]).decode(), base64.b64encode(_PDF[301:]).decode()]
    return [text[:400], text[400:]]  # split on a 4-character boundary


@pytest.mark.parametrize("kind", ["text split anywhere", "each piece encoded", "split on a boundary"])
def test_ed_document_in_several_rows_of_one_observation_is_one_document(converter: Any, kind: str) -> None:
    """Rows with the same OBX-3 and OBX-4 are one observation: their ED data is one document. Was: each piece a
    document of its own (two broken PDFs published) or the report rejected as "not valid Base64"."""
    import base64

    first, second = _pieces(kind)
    b = convert_one(converter, message(GDT, _ed(3, "1", first), _ed(4, "1", second)))
    [form] = one(b, "DiagnosticReport")["presentedForm"]
    assert base64.b64decode(form["data"]) == _PDF


def test_ed_continuation_row_with_data_only(converter: Any) -> None:
    import base64

    first, second = _pieces("text split anywhere")
    rows = (GDT, _ed(3, "1", first), f"OBX|4|ED|PDF^Report^L|1|{second}||||||F")
    [form] = one(convert_one(converter, message(*rows)), "DiagnosticReport")["presentedForm"]
    assert base64.b64decode(form["data"]) == _PDF


def test_two_documents_with_their_own_sub_ids_stay_two(converter: Any) -> None:
    import base64

    one_pdf = base64.b64encode(_PDF).decode()
    b = convert_one(converter, message(GDT, _ed(3, "1", one_pdf), _ed(4, "2", one_pdf)))
    forms = one(b, "DiagnosticReport")["presentedForm"]
    assert [base64.b64decode(f["data"]) for f in forms] == [_PDF, _PDF]


# --- four-digit hex escapes written as UTF-16 code units (field report 02's kind) --------------------------------


def test_four_digit_hex_escapes_as_code_units(converter: Any) -> None:
    """``\\X041F\\`` is ``П`` written as its UTF-16 code unit (the HL7-dotnetcore writers' form of field report 02's
    ``\\X000d\\``); read as bytes it is EOT + US, no text at all, and the word vanished. Where the byte reading gives
    control characters and the code-unit reading gives text, the code units are meant; ``\\X000D\\``,
    ``\\X00E9\\``, ``\\XC3A4\\`` (UTF-8 bytes) read as before."""
    b = "\\"
    text = "".join(f"{b}X{ord(c):04X}{b}" for c in "Плевра") + " свободна." + f"{b}X000D{b}{b}X000A{b}Caf{b}X00E9{b}"
    rows = (f"OBX|2|TX|71020&GDT|1|{text} T{b}XC3A4{b}glich.||||||F", IMP)
    pid5 = "".join(f"{b}X{ord(c):04X}{b}" for c in "Жуков") + "^Anna"
    bundle = convert_one(converter, message(*rows, pid5=pid5))
    notes = [n["text"] for n in one(bundle, "DiagnosticReport")["note"]]
    assert notes[0] == "Плевра свободна.\nCafé Täglich."
    assert one(bundle, "Patient")["name"][0]["family"] == "Жуков"


def test_a_control_character_escape_stays_dropped(converter: Any) -> None:
    b = "\\"
    rows = (f"OBX|2|TX|71020&GDT|1|Bell{b}X0007{b}here, nul{b}X0000{b}there.||||||F", IMP)
    notes = [n["text"] for n in one(convert_one(converter, message(*rows)), "DiagnosticReport")["note"]]
    assert notes[0] == "Bellhere, nulthere."


# --- the sender profile's charset when MSH-18 names the default (ASCII) or a UTF-8 the bytes are not -------------


@pytest.mark.parametrize("msh18", ["ASCII", "UNICODE UTF-8"])
def test_sender_profile_charset_when_msh18_is_ascii_or_a_false_utf8(msh18: str) -> None:
    """MSH-18 ``ASCII`` is HL7's default for an empty MSH-18 (2.15.9.18), and a ``UNICODE UTF-8`` whose bytes are
    not UTF-8 names no set the bytes are in: both are read like an empty MSH-18, so the sender profile's
    ``charset`` (Windows-1250 here) applies. Was: the profile ignored, ``Za¿ó³æ`` published."""
    from engine.convert import Converter
    from pipelines.context import MappingContext
    from tests.hl7v2.helpers import bundles
    from tests.hl7v2.test_tryout_mapping import _in_charset, _published_text

    data = _in_charset("Zażółć gęślą jaźń.", msh18, "cp1250")
    north = {"name": "north", "sending_facility": "NORTHCLINIC", "charset": "windows-1250"}
    [b] = bundles(Converter(MappingContext.from_mapping({"senders": [north]})).convert(data))
    assert one(b, "Patient")["name"][0] == {"family": "Łódź", "given": ["Zażółć"]}
    assert "Zażółć gęślą jaźń." in _published_text(b)


def test_whole_documents_under_one_empty_sub_id_stay_separate(converter: Any) -> None:
    """Senders leave OBX-4 empty on two whole PDFs in a row: each reads alone and starts with ``%PDF``, so they
    are two documents, not one joined file."""
    import base64

    other = _PDF.replace(b"%%EOF", b"%%EOF\n")
    rows = (GDT, _ed(3, "", base64.b64encode(_PDF).decode()), _ed(4, "", base64.b64encode(other).decode()))
    forms = one(convert_one(converter, message(*rows)), "DiagnosticReport")["presentedForm"]
    assert [base64.b64decode(f["data"]) for f in forms] == [_PDF, other]


# --- date/time results in the section narrative: as sent (the SR side's "related smaller faults", HL7 side) -------


def test_date_time_results_in_narrative_show_the_value_as_sent(converter: Any) -> None:
    """A DTM result without an offset was rendered in the section XHTML as its FHIR value with the default zone
    (``2026-11-30T09:45:00+00:00``: an offset nobody sent, seconds nobody wrote) and TM ``0930`` as ``09:30:00``.
    Like SR DATE/TIME/DATETIME items: precision as written, an offset only when sent. The FHIR values keep
    what FHIR requires."""
    rows = (
        GDT,
        "OBX|3|TM|11111-1^Injection time^L||0930||||||F",
        "OBX|4|DT|11112-1^Prior exam date^L||20250115||||||F",
        "OBX|5|DTM|11113-1^Contrast given^L||202611300945||||||F",
        "OBX|6|TS|11114-1^Other^L||20261130094512.5+0200||||||F",
    )
    data = _times(message(*rows), "20261130101500", "20261130093000", "20261130101000")
    b = convert_one(converter, data)
    div = next(s["text"]["div"] for s in one(b, "Composition")["section"] if "Injection time" in s["text"]["div"])
    for shown in ("Injection time: 09:30<", "Prior exam date: 2025-01-15", "Contrast given: 2026-11-30 09:45<",
                  "Other: 2026-11-30 09:45:12.5 +02:00"):  # fmt: skip
        assert shown in div, div
    assert "+00:00" not in div and "T09:45" not in div
    values = {o["code"]["coding"][0]["code"]: o for o in resources(b, "Observation")}
    assert values["11111-1"]["valueTime"] == "09:30:00"
    assert values["11113-1"]["valueDateTime"] == "2026-11-30T09:45:00+00:00"


def test_imr_rendition_claims_no_zone_nobody_sent() -> None:
    """IMR HTML rendition header: "Study date" and "Signed" were the FHIR values with the deployment default
    (``2026-11-30T10:10:00+00:00``) when no time carried an offset; the text now shows them without an offset
    (the FHIR instants keep the default, as FHIR needs one). With an offset sent, it is shown."""
    import base64

    from engine.cmd_map import load_mapping_context
    from engine.convert import Converter

    imr = Converter(load_mapping_context(None), model="imr")

    def html(data: bytes) -> str:
        result = imr.convert(data)
        assert not result.rejections, [r.reason for r in result.rejections]
        [body] = [o.body for o in result.outputs]
        import json

        dr = one(json.loads(body), "DiagnosticReport")
        form = next(f for f in dr["presentedForm"] if f["contentType"] == "text/html")
        return base64.b64decode(form["data"]).decode()

    plain = html(_times(message(GDT, IMP), "20261130101500", "20261130093000", "20261130101000"))
    assert "2026-11-30T10:10:00<" in plain and "2026-11-30T09:30:00<" in plain and "+00:00" not in plain
    zoned = html(message(GDT, IMP))
    assert "2026-11-30T10:10:00+01:00" in zoned
