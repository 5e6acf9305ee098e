"""Specific Character Set of SR content items (PS3.3 C.12.1.1.2, PS3.5 §6.1): an item's own set applies to it
and to the items nested in it; text that is not valid in its set is rejected with a reason naming the item,
never decoded with U+FFFD. Both readers (the raw-bytes reader and pydicom's element access) must agree."""

# ruff: noqa: RUF001  (report text in other scripts: en dashes and full-width colons are the point)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.context import MappingContext
from pipelines.dicom_sr.mapper import content_tree, parse
from pipelines.dicom_sr.reader import Item, read_dataset
from pipelines.errors import ParseError
from tests.conftest import TESTDATA
from tests.dicom_sr.builder import build_sr, code, container, item
from tests.dicom_sr.helpers import by_type, load, one
from tests.fhir_strings import strings as _strings

FIELD_REPORT_17 = TESTDATA / "field-reports" / "17-sr-item-level-charset-latin1-in-utf8.dcm"
FINDINGS = code("121070", "DCM", "Findings")
IMPRESSIONS = code("121072", "DCM", "Impressions")
FINDING = code("121071", "DCM", "Finding")
IMPRESSION = code("121073", "DCM", "Impression")
READERS = ["raw", "pydicom"]


def _tree(data: bytes, reader: str) -> list[Item]:
    if reader == "raw":
        return parse(data, MappingContext()).root
    return content_tree(read_dataset(data), fast=False)


def _texts(items: list[Item]) -> list[str]:
    out: list[str] = []
    for i in items:
        if i.text is not None:
            out.append(i.text)
        if i.name is not None and i.vtype == "CONTAINER":
            out.append(i.name.meaning)
        out.extend(_texts(i.children))
    return out


def _note(bundle: dict[str, Any], section_loinc: str) -> str:
    report = one(bundle, "DiagnosticReport")
    for note in report.get("note", []):
        codes = [c["valueCodeableConcept"]["coding"][0]["code"] for c in note.get("extension", [])
                 if "valueCodeableConcept" in c]  # fmt: skip
        if section_loinc in codes:
            return str(note["text"])
    raise AssertionError(f"no note for section {section_loinc}: {report.get('note')}")


def _convert(converter: Any, data: bytes) -> dict[str, Any]:
    result = converter.convert(data)
    assert not result.rejections, [r.reason for r in result.rejections]
    assert len(result.outputs) == 1
    return load(result.outputs[0].body)


def test_field_report_17_item_level_latin1_in_utf8(converter: Any) -> None:
    bundle = _convert(converter, FIELD_REPORT_17.read_bytes())
    assert _note(bundle, "59776-5") == "Gefäßstatus: Aortenbogen unauffällig."
    assert _note(bundle, "19005-8") == "Kein pathologischer Befund – Größe normal."  # the UTF-8 sibling
    composition = one(bundle, "Composition")
    findings = next(s for s in composition["section"] if s["code"]["coding"][0]["code"] == "59776-5")
    assert "Gefäßstatus: Aortenbogen unauffällig." in findings["text"]["div"]
    assert not [s for s in _strings(bundle) if "\ufffd" in s]


@pytest.mark.parametrize("reader", READERS)
def test_field_report_17_both_readers(reader: str) -> None:
    texts = _texts(_tree(FIELD_REPORT_17.read_bytes(), reader))
    assert "Gefäßstatus: Aortenbogen unauffällig." in texts


@pytest.mark.parametrize("reader", READERS)
def test_nested_items_inherit_the_items_set_and_siblings_do_not(reader: str) -> None:
    """A container declares ISO_IR 100: its own concept name, its TEXT child and that child's concept name are
    Latin-1 bytes; the next heading (no own set) is UTF-8 again, as is the document."""
    data = build_sr(
        container(
            code("121070", "DCM", "Befundübersicht".encode("latin-1")),
            item("TEXT", code("121071", "DCM", "Größe".encode("latin-1")), "Milz unauffällig.".encode("latin-1")),
            container(FINDINGS, item("TEXT", FINDING, "Leber: kein Herd, Ödem nein.".encode("latin-1"))),
            charset="ISO_IR 100",
        ),
        container(IMPRESSIONS, item("TEXT", IMPRESSION, "Größe normal – ÄÖÜ.".encode())),
    )
    tree = _tree(data, reader)
    assert tree[0].name is not None and tree[0].name.meaning == "Befundübersicht"
    assert tree[0].children[0].name is not None and tree[0].children[0].name.meaning == "Größe"
    assert tree[0].children[0].text == "Milz unauffällig."
    assert tree[0].children[1].children[0].text == "Leber: kein Herd, Ödem nein."
    assert tree[1].children[0].text == "Größe normal – ÄÖÜ."


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("term", "codec", "words"),
    [
        ("ISO_IR 101", "iso8859_2", "Žlučník bez kamenů, slezina v normě."),
        ("ISO_IR 144", "iso8859_5", "Очаговых изменений не выявлено."),
        ("ISO_IR 126", "iso8859_7", "Χωρίς παθολογικά ευρήματα."),
        ("ISO_IR 192", "utf-8", "Без патологии – 正常."),
    ],
)
def test_other_sets_on_an_item(reader: str, term: str, codec: str, words: str) -> None:
    data = build_sr(
        container(FINDINGS, item("TEXT", FINDING, words.encode(codec), charset=term)),
        charset="ISO_IR 100",
    )
    assert _tree(data, reader)[0].children[0].text == words


@pytest.mark.parametrize("reader", READERS)
def test_iso2022_code_extensions(reader: str) -> None:
    """PS3.5 §6.1.2.5: escape sequences switch to a declared set (Japanese JIS X 0208, Cyrillic G1)."""
    japanese = "所見：異常なし".encode("iso2022_jp")
    cyrillic = b"Befund: \x1b-L" + "без патологии".encode("iso8859_5")
    data = build_sr(
        container(
            FINDINGS,
            item("TEXT", FINDING, japanese, charset="\\ISO 2022 IR 87"),
            item("TEXT", FINDING, cyrillic, charset="ISO 2022 IR 100\\ISO 2022 IR 144"),
        ),
        charset="ISO_IR 100",
    )
    children = _tree(data, reader)[0].children
    assert [c.text for c in children] == ["所見：異常なし", "Befund: без патологии"]


def _reason(data: bytes, reader: str) -> str:
    with pytest.raises(ParseError) as caught:
        _tree(data, reader)
    return str(caught.value)


@pytest.mark.parametrize("reader", READERS)
def test_undecodable_text_is_rejected_naming_the_item(reader: str) -> None:
    secret = "Gefäßstatus unauffällig".encode("latin-1")  # Latin-1 bytes, no item-level set: invalid UTF-8
    data = build_sr(container(FINDINGS, item("TEXT", FINDING, b"ok"), item("TEXT", FINDING, secret)))
    reason = _reason(data, reader)
    assert reason == (
        "SR content item 1.1.2 (TEXT): TextValue (0040,A160) is not valid 'ISO_IR 192' text (byte offset 3)"
    )
    assert "Gef" not in reason and "\n" not in reason


@pytest.mark.parametrize("reader", READERS)
def test_undecodable_concept_name_and_nested_item(reader: str) -> None:
    data = build_sr(
        container(FINDINGS, container(code("1", "99X", b"Bad \xff name"), item("TEXT", FINDING, b"fine"))),
    )
    assert _reason(data, reader) == (
        "SR content item 1.1.1 (CONTAINER): CodeMeaning (0008,0104) is not valid 'ISO_IR 192' text (byte offset 4)"
    )
    # declared in the nested item's own set, the same bytes are fine
    nested = container(code("1", "99X", b"Bad \xff name"), item("TEXT", FINDING, b"fine"), charset="ISO_IR 100")
    data = build_sr(container(FINDINGS, nested))
    assert _tree(data, reader)[0].children[0].name == code_of_meaning("Bad ÿ name")


def code_of_meaning(meaning: str) -> Any:
    from pipelines.dicom_sr.reader import Code

    return Code("1", "99X", meaning)


@pytest.mark.parametrize("reader", READERS)
def test_undeclared_escape_sequence_and_unknown_term(reader: str) -> None:
    cyrillic = b"\x1b-L" + "без".encode("iso8859_5")  # ISO_IR 144 never declared
    data = build_sr(container(FINDINGS, item("TEXT", FINDING, cyrillic, charset="ISO 2022 IR 100")))
    assert _reason(data, reader).startswith("SR content item 1.1.1 (TEXT): TextValue (0040,A160) is not valid")
    unknown = build_sr(container(FINDINGS, item("TEXT", FINDING, "Größe".encode("latin-1"), charset="X_LATIN")))
    assert "'X_LATIN', which is not a DICOM defined term" in _reason(unknown, reader)
    ascii_ok = build_sr(container(FINDINGS, item("TEXT", FINDING, b"Normal.", charset="X_LATIN")))
    assert _tree(ascii_ok, reader)[0].children[0].text == "Normal."


def test_rejection_through_the_engine_names_the_item(converter: Any, tmp_path: Path) -> None:
    data = build_sr(container(FINDINGS, item("TEXT", FINDING, "Läsion".encode("latin-1"))))
    result = converter.convert(data)
    assert not result.outputs and len(result.rejections) == 1
    assert result.rejections[0].reason == (
        "SR content item 1.1.1 (TEXT): TextValue (0040,A160) is not valid 'ISO_IR 192' text (byte offset 1)"
    )
    assert result.rejections[0].raw == data


def test_undecodable_header_text_is_rejected(converter: Any) -> None:
    data = build_sr(container(FINDINGS, item("TEXT", FINDING, b"Normal.")), patient_name="Weiß^Zoë".encode("latin-1"))
    result = converter.convert(data)
    assert not result.outputs
    assert [r.reason for r in result.rejections] == [
        "SR header: PatientName (0010,0010) is not valid 'ISO_IR 192' text (byte offset 3)"
    ]


def test_header_in_latin2_and_no_replacement_characters(converter: Any) -> None:
    data = build_sr(
        container(FINDINGS, item("TEXT", FINDING, "Žlučník bez kamenů.".encode("iso8859_2"))),
        charset="ISO_IR 101",
        patient_name="Dvořák^Jiří".encode("iso8859_2"),
    )
    bundle = _convert(converter, data)
    patient = one(bundle, "Patient")
    assert patient["name"][0]["family"] == "Dvořák" and patient["name"][0]["given"] == ["Jiří"]
    assert _note(bundle, "59776-5") == "Žlučník bez kamenů."
    assert "\ufffd" not in json.dumps(bundle, ensure_ascii=False)
    assert by_type(bundle, "Composition")


def test_dataset_level_iso2022_japanese(converter: Any) -> None:
    """PS3.5 Annex H style: the whole SR in ``\\ISO 2022 IR 87``; PN with alphabetic and ideographic groups."""
    name = b"Yamada^Tarou=" + "山田^太郎".encode("iso2022_jp")
    data = build_sr(
        container(FINDINGS, item("TEXT", FINDING, "肝臓に異常なし。".encode("iso2022_jp"))),
        charset="\\ISO 2022 IR 87",
        patient_name=name,
    )
    bundle = _convert(converter, data)
    assert one(bundle, "Patient")["name"][0]["family"] == "Yamada"
    assert _note(bundle, "59776-5") == "肝臓に異常なし。"
    tree = content_tree(read_dataset(data), fast=False)
    assert tree == parse(data, MappingContext()).root and tree[0].children[0].text == "肝臓に異常なし。"


@pytest.mark.parametrize("reader", READERS)
def test_date_time_values_outside_the_default_repertoire_are_rejected(reader: str) -> None:
    """DA/TM/DT use the default repertoire whatever the Specific Character Set (PS3.5 §6.2)."""
    data = build_sr(container(FINDINGS, item("DATE", code("111060", "DCM", "Study Date"), "20991231")))
    data = data.replace(b"20991231", b"2099\xff231")  # pydicom will not write such a DA itself
    assert _reason(data, reader) == (
        "SR content item 1.1.1 (DATE): Date (0040,A121) is not valid 'ISO_IR 6' text (byte offset 4)"
    )
    fine = build_sr(container(FINDINGS, item("TIME", code("111061", "DCM", "Study Time"), b"093000 ")))
    assert _tree(fine, reader)[0].children[0].text == "093000"
