"""The HL7 field reports of ../shared/testdata/field-reports/ (README: the wrong and the right value of each),
and variants of each kind of fault: other separators, lower-case and multi-digit hex, other composite fields,
D rows, messages whose every row is retracted."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.errors import RetractedContent, UnsupportedMessage
from tests.conftest import TESTDATA, profile_errors
from tests.fhir_strings import strings
from tests.hl7v2.helpers import bundles, one, resources, section_note

REPORTS = TESTDATA / "field-reports"
FORBIDDEN = {chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"}


def assert_clean(bundle: dict[str, Any]) -> None:
    """No FHIR string, XHTML div included, holds a character below U+0020 but TAB, CR, LF."""
    for s in strings(bundle):
        bad = FORBIDDEN & set(s)
        assert not bad, f"control characters {sorted(map(ord, bad))} in {s[:80]!r}"


def convert_one(converter: Any, data: bytes) -> dict[str, Any]:
    result = converter.convert(data)
    assert not result.rejections, [r.reason for r in result.rejections]
    [b] = bundles(result)
    assert_clean(b)
    return b


def file_bundle(converter: Any, name: str) -> dict[str, Any]:
    return convert_one(converter, (REPORTS / name).read_bytes())


MSH = "MSH|^~\\&|RIS|NORTHCLINIC|EHR|NORTHCLINIC|20261130101500+0100||ORU^R01^ORU_R01|MSG9|P|2.5.1"
UID = "OBX|1|ST|113014^DICOM Study^DCM||1.2.826.0.1.3680043.8.498.99||||||F"


def message(
    *obx: str,
    pid3: str = "PAT9^^^NORTHCLINIC^MR",
    pid5: str = "Testperson^Anna",
    obr3: str = "FI9",
    obr4: str = "71020^CHEST XRAY 2 VIEWS^CPT4",
    obr18: str = "ACC9",
    obr32: str = "RAD1&Reader&Rita",
    orc12: str = "",
    msh4: str = "NORTHCLINIC",
    obr25: str = "F",
    charset: str = "",
) -> bytes:
    msh = MSH.replace("|NORTHCLINIC|EHR", f"|{msh4}|EHR") + ("||||||" + charset if charset else "")
    orc = f"ORC|RE|PL9|{obr3}" + ("|" * 9 + orc12 if orc12 else "")
    obr = (
        f"OBR|1|PL9|{obr3}|{obr4}|||20261130093000+0100|||||||||REF1^Referrer^Rolf||{obr18}||||"
        f"20261130101000+0100||CR|{obr25}|||||||{obr32}"
    )
    rows = [msh, f"PID|1||{pid3}||{pid5}||19700101|F", orc, obr, UID, *obx]
    return ("\r".join(rows) + "\r").encode("utf-8")


def separators(data: bytes, fs: str, enc: str) -> bytes:
    """The same message with other separators: MSH-1 ``fs`` and MSH-2 ``enc`` (component, repetition, escape,
    subcomponent) replacing ``|^~\\&`` everywhere."""
    table = str.maketrans(dict(zip("|^~\\&", fs + enc, strict=True)))
    return data.decode("utf-8").translate(table).encode("utf-8")


def findings(b: dict[str, Any]) -> str:
    return section_note(b, "59776-5")


@pytest.mark.parametrize(
    "name",
    [
        "01-xhex-crlf-backtoback.hl7",
        "02-xhex-4digit-cyrillic-utf8-nomsh18.hl7",
        "03-delimiter-escapes-text-and-names.hl7",
        "12-ft-formatting-commands.hl7",
        "14-obx11-W-wrong-patient-corrected.hl7",
    ],
)
def test_field_report_bundles_conform(converter: Any, fhir_validator: Any, name: str) -> None:
    assert not profile_errors(fhir_validator, file_bundle(converter, name))


# --- 01: CR and LF as two hex escapes ---------------------------------------------------------------------


def test_01_crlf_back_to_back_hex_escapes(converter: Any) -> None:
    right = "Heart size normal.\nNo focal consolidation.\nNo pleural effusion."
    b = file_bundle(converter, "01-xhex-crlf-backtoback.hl7")
    assert findings(b) == right
    dr = one(b, "DiagnosticReport")
    assert dr["note"][0]["text"] == right
    anchor = next(o for o in resources(b, "Observation") if o["code"]["coding"][0]["code"] == "59776-5")
    assert anchor["valueString"] == right


@pytest.mark.parametrize(
    "breaks",
    [
        "\\X0D\\\\X0A\\",  # two escapes
        "\\X0D0A\\",  # one escape
        "\\x0d\\\\x0a\\",  # lower case
        "\\X0d0a\\",
        "\\X0A\\",
        "\\X0D\\",
        "\\.br\\",
        "\\X000D\\\\X000A\\",  # four-digit (16-bit) escapes
        "\\X0C\\",  # form feed
        "\\X0B\\",  # vertical tab
    ],
)
def test_every_line_break_spelling_gives_one_break(converter: Any, breaks: str) -> None:
    text = f"Heart size normal.{breaks}No focal consolidation."
    b = convert_one(converter, message(f"OBX|2|TX|71020&GDT|1|{text}||||||F"))
    assert findings(b) == "Heart size normal.\nNo focal consolidation."


def test_crlf_escapes_with_other_separators_and_in_nte(converter: Any) -> None:
    data = message(
        "OBX|2|FT|71020&GDT|1|Line one.\\X0D\\\\X0A\\Line two.||||||F",
        "NTE|1||Comment one.\\X0D\\\\X0A\\Comment two.",
    )
    b = convert_one(converter, separators(data, "#", "$*!@"))
    assert findings(b) == "Line one.\nLine two.\nComment one.\nComment two."


# --- 02: four-digit lower-case hex, control characters ----------------------------------------------------


RIGHT_02 = "клетки:\nОчаговых"  # noqa: RUF001 (Cyrillic text)


def test_02_no_control_character_from_four_digit_hex(converter: Any) -> None:
    b = file_bundle(converter, "02-xhex-4digit-cyrillic-utf8-nomsh18.hl7")
    text = findings(b)
    assert RIGHT_02 in text and "\x00" not in text
    assert RIGHT_02 in one(b, "DiagnosticReport")["note"][0]["text"]
    findings_div = next(s for s in one(b, "Composition")["section"] if s["code"]["coding"][0]["code"] == "59776-5")
    assert RIGHT_02.replace("\n", "<br/>") in findings_div["text"]["div"]


@pytest.mark.parametrize(
    ("raw", "right"),
    [
        ("bell\\X07\\end", "bellend"),
        ("esc\\X1B\\end", "escend"),
        ("nul\\X00\\end", "nulend"),
        ("tab\\X09\\end", "tab\tend"),
        ("page\\X0C\\two", "page\ntwo"),
        ("a\\X0001\\b", "ab"),
        ("raw\x01control", "rawcontrol"),
        ("raw\x0cformfeed", "raw\nformfeed"),
        ("raw\x0bvtab", "raw\nvtab"),
        ("umlaut \\XC3A4\\ done", "umlaut ä done"),
        ("umlaut \\XC3\\\\XA4\\ split", "umlaut ä split"),
        ("latin \\XE4\\ byte", "latin ä byte"),
        ("euro \\xe2\\\\x82\\\\xac\\ sign", "euro € sign"),
    ],
)
def test_control_characters_dropped_or_line_breaks(converter: Any, raw: str, right: str) -> None:
    b = convert_one(converter, message(f"OBX|2|TX|71020&GDT|1|{raw}||||||F"))
    assert findings(b) == right


def test_raw_nul_bytes_are_dropped_binary_is_rejected(converter: Any) -> None:
    data = message("OBX|2|TX|71020&GDT|1|Lungs\x00 clear.\x00||||||F", pid5="Test\x00person^Anna")
    b = convert_one(converter, data)
    assert findings(b) == "Lungs clear."
    assert one(b, "Patient")["name"][0]["family"] == "Testperson"
    result = converter.convert(message("OBX|2|TX|71020&GDT|1|" + "\x00" * 400 + "||||||F"))
    assert not result.outputs and "binary data" in result.rejections[0].reason


def test_control_characters_in_names_and_codes_are_removed(converter: Any) -> None:
    data = message(
        "OBX|2|TX|71020&GDT|1|Text.||||||F",
        pid5="Test\\X07\\person^An\x01na",
        obr4="71020^CHEST\\X0C\\XRAY^CPT4",
    )
    b = convert_one(converter, data)
    assert one(b, "Patient")["name"][0] == {"family": "Testperson", "given": ["Anna"]}


# --- 03: delimiter escapes, decoded after splitting, in every composite ----------------------------------


def test_03_escapes_decoded_after_splitting(converter: Any) -> None:
    b = file_bundle(converter, "03-delimiter-escapes-text-and-names.hl7")
    assert one(b, "Patient")["name"][0]["family"] == "Smith&Jones"
    assert findings(b) == (
        "Comparison: CR 2026|11|01. Lines A^B intact. T1\\T2 ratio normal. Left & right lungs clear. Score 1~2."
    )


def _composites(converter: Any, data: bytes, fs: str = "|", enc: str = "^~\\&") -> None:
    """\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ decode to the separators the message declares (``fs``, ``enc``)."""
    seps = str.maketrans(dict(zip("|^~\\&", fs + enc, strict=True)))

    def right(value: str) -> str:
        return value.translate(seps)

    b = convert_one(converter, data)
    patient = one(b, "Patient")
    assert patient["name"][0] == {"family": right("Smith&Jones"), "given": [right("Anne^Marie")]}  # XPN
    assert patient["identifier"][0]["value"] == right("PAT&9")  # CX.1
    sr = one(b, "ServiceRequest")
    assert sr["identifier"][0]["value"] == right("ACC&9")  # EI accession (OBR-18)
    assert sr["code"]["concept"]["coding"][0]["display"] == right("CHEST & ABDOMEN|PELVIS")  # CWE.2
    assert sr["requester"]["display"] == right("John O&Brien")  # XCN (ORC-12)
    dr = one(b, "DiagnosticReport")
    assert dr["identifier"][0]["value"] == right("FI&9~1")  # EI filler order number (ORC-3/OBR-3)
    assert one(b, "Practitioner")["name"][0]["family"] == right("Reader^Smith")  # NDL/CNN (OBR-32) subcomponents
    assert one(b, "Organization")["name"] == right("North&Clinic")  # HD (MSH-4.1)
    assert findings(b) == right("A|B^C&D~E\\F")


COMPOSITE = {
    "pid3": "PAT\\T\\9^^^NORTHCLINIC^MR",
    "pid5": "Smith\\T\\Jones&vd^Anne\\S\\Marie",
    "obr3": "FI\\T\\9\\R\\1",
    "obr4": "71020^CHEST \\T\\ ABDOMEN\\F\\PELVIS^CPT4",
    "obr18": "ACC\\T\\9&NORTHCLINIC",
    "obr32": "RAD1&Reader\\S\\Smith&Rita",
    "orc12": "123^O\\T\\Brien^John",
    "msh4": "North\\T\\Clinic",
}
TEXT_ROW = "OBX|2|TX|71020&GDT|1|A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F||||||F"


def test_escapes_in_every_composite_field(converter: Any) -> None:
    _composites(converter, message(TEXT_ROW, **COMPOSITE))


@pytest.mark.parametrize(("fs", "enc"), [("#", "$*!@"), ("|", "^~!&"), ("%", "`}?{")])
def test_declared_separators_are_the_ones_used(converter: Any, fs: str, enc: str) -> None:
    _composites(converter, separators(message(TEXT_ROW, **COMPOSITE), fs, enc), fs, enc)


def test_msh2_without_escape_character(converter: Any) -> None:
    """MSH-2 "^~": no escape character (and no subcomponent separator), so backslashes and "&" are text."""
    data = message("OBX|2|TX|71020&GDT|1|C:\\T\\temp & more||||||F", pid5="Smith&Jones\\T\\^Anna")
    data = data.replace(b"MSH|^~\\&|", b"MSH|^~|")
    b = convert_one(converter, data)
    assert one(b, "Patient")["name"][0]["family"] == "Smith&Jones\\T\\"
    assert findings(b) == "C:\\T\\temp & more"


def test_msh2_without_subcomponent_separator(converter: Any) -> None:
    data = message("OBX|2|TX|71020&GDT|1|Left \\T\\ right.||||||F", pid5="Smith&Jones^Anna")
    data = data.replace(b"MSH|^~\\&|", b"MSH|^~\\|")
    b = convert_one(converter, data)
    assert one(b, "Patient")["name"][0]["family"] == "Smith&Jones"
    assert findings(b) == "Left  right."  # \T\ names a separator the message does not have


# --- 12: FT formatting commands ---------------------------------------------------------------------------


def test_12_formatting_commands_never_glue_words(converter: Any) -> None:
    b = file_bundle(converter, "12-ft-formatting-commands.hl7")
    text = findings(b)
    assert "normal.\n\nNote:" in text
    assert "Note:   no prior." in text
    assert text.startswith("CHEST RADIOGRAPH\n")
    assert "1. Lungs clear.\n2. Heart normal." in text
    assert "fixed  spacing" in text
    assert section_note(b, "19005-8") == "Normal chest."


@pytest.mark.parametrize(
    ("raw", "right"),
    [
        ("one\\.sp\\two", "one\n\ntwo"),
        ("one\\.sp 2\\two", "one\n\n\ntwo"),
        ("one\\.sp+1\\two", "one\n\ntwo"),
        ("\\.sp\\first", "first"),  # at the start of a field .sp is a line break (2.7.6)
        ("one\\.br\\\\.sp\\two", "one\n\ntwo"),
        ("one\\.sk\\two", "one two"),
        ("one\\.sk 4\\two", "one    two"),
        ("one\\.in+4\\two", "one\ntwo"),
        ("one\\.ti-2\\two", "one\ntwo"),
        ("one\\.ce\\two", "one\ntwo"),
        ("one\\.nf\\two\\.fi\\three", "one\ntwo\nthree"),
        ("\\.in+4\\\\.ti-2\\one", "one"),
        ("one\\Zlocal\\two", "one two"),
        ("one \\Zlocal\\two", "one two"),
        ("\\H\\bold\\N\\ plain", "bold plain"),
        ("in\\H\\word\\N\\s", "inwords"),
        ("one\\.BR\\two", "one\ntwo"),
        ("keep \\unknown\\ escape", "keep \\unknown\\ escape"),
        ("lone \\ escape", "lone \\ escape"),
    ],
)
def test_formatting_commands(converter: Any, raw: str, right: str) -> None:
    b = convert_one(converter, message(f"OBX|2|FT|71020&GDT|1|{raw}||||||F"))
    assert findings(b) == right


def test_formatting_commands_with_another_escape_character(converter: Any) -> None:
    data = separators(message("OBX|2|FT|71020&GDT|1|normal.\\.sp\\Note:\\.sk 3\\no prior.||||||F"), "|", "^~!&")
    assert findings(convert_one(converter, data)) == "normal.\n\nNote:   no prior."


# --- 14: OBX-11 W (wrong patient) and D (deleted) ---------------------------------------------------------


def test_14_wrong_patient_row_left_out(converter: Any) -> None:
    b = file_bundle(converter, "14-obx11-W-wrong-patient-corrected.hl7")
    assert findings(b) == "Corrected text: lungs clear."
    assert all("wrong patient" not in s for s in strings(b))
    assert one(b, "DiagnosticReport")["status"] == "corrected"


def test_deleted_rows_findings_and_notes_left_out(converter: Any) -> None:
    data = message(
        "OBX|2|TX|71020&GDT|1|Deleted sentence.||||||D",
        "NTE|1||Comment on the deleted row.",
        "OBX|3|TX|71020&GDT|2|Kept sentence.||||||F",
        "OBX|4|CE|71020&IMP|1|H20^Heart size enlarged^L||||||d",
        "OBX|5|CWE|RID123^Liver mass^RADLEX||RID456^Present^RADLEX||||||W",
        "OBX|6|TX|71020&IMP|1|Kept impression.|||||W|",  # drifted: status in OBX-10
        "OBX|7|TX|71020&IMP|2|Final impression.||||||F",
    )
    b = convert_one(converter, data)
    assert findings(b) == "Kept sentence."
    assert section_note(b, "19005-8") == "Final impression."
    text = " ".join(strings(b))
    for gone in ("Deleted sentence", "Comment on the deleted row", "Heart size enlarged", "Liver mass", "Kept impr"):
        assert gone not in text


@pytest.mark.parametrize("status", ["W", "D", "w"])
def test_all_rows_retracted_is_filtered_not_published(converter: Any, status: str) -> None:
    data = message(
        f"OBX|2|TX|71020&GDT|1|Old text posted to the wrong patient.||||||{status}",
        f"OBX|3|TX|71020&IMP|1|Normal.||||||{status}",
        obr25="C",
    )
    result = converter.convert(data)
    assert not result.outputs and not result.rejections  # filtered: nothing published, no dead letter
    [filtered] = result.filtered
    assert filtered.reason == "all report content retracted (OBX-11 W/D)"
    assert filtered.category == "RetractedContent"
    assert b"wrong patient" not in filtered.reason.encode()
    assert issubclass(RetractedContent, UnsupportedMessage)  # the runtime's "filtered" family


def test_retracted_group_is_not_an_order_of_another_report(converter: Any) -> None:
    data = message("OBX|2|TX|71020&GDT|1|Kept text.||||||F").decode()
    data += "OBR|2|PL8|FI8|71010^CHEST 1 VIEW^CPT4|||20261130093000+0100|||||||||||ACC8||||||CR|C\r"
    data += "OBX|1|TX|71010&GDT|1|Wrong patient text.||||||W\r"
    b = convert_one(converter, data.encode())
    assert [sr["identifier"][0]["value"] for sr in resources(b, "ServiceRequest")] == ["ACC9"]
    assert findings(b) == "Kept text."


@pytest.mark.parametrize("row", [
    "OBX|3|RP|3856991|4|7795082776^UK^ZB||||||F",  # reference pointer (seen in the WashU feed)
    "OBX|3|CX|PATREF||9876^^^OTHER^MR||||||F",  # a composite identifier
])
def test_pointer_and_composite_rows_are_not_findings(converter: Any, row: str) -> None:
    """OBX value types that point elsewhere or carry identifiers (HL7 v2.5.1 table 0125: RP, CX, ...) are not
    clinical findings: no Observation, no raw component separators in any string."""
    b = convert_one(converter, message("OBX|2|TX|71020&GDT|1|Heart size normal.||||||F", row))
    assert all("^" not in s for s in strings(b))
    values = [o.get("valueString", "") for o in resources(b, "Observation")]
    assert not any("7795082776" in v or "9876" in v for v in values)
    assert any("Heart size normal." in s for s in strings(b))
