"""Narrative of SR DATE / TIME / DATETIME content items (all formatted alike, no invented offset) and control
characters in SR text (they reach the shared output sanitizer: none below U+0020 but TAB, CR, LF)."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.dicom_sr.tid2000 import narrative_when
from tests.dicom_sr.builder import build_sr, code, container, item
from tests.dicom_sr.helpers import load, one
from tests.fhir_strings import strings as _strings

FINDINGS = code("121070", "DCM", "Findings")
FINDING = code("121071", "DCM", "Finding")


@pytest.mark.parametrize(
    ("vtype", "value", "shown"),
    [
        ("DATE", "20261130", "2026-11-30"),
        ("DATE", "202611", "2026-11"),
        ("TIME", "093000", "09:30:00"),
        ("TIME", "0930", "09:30"),
        ("TIME", "093000.25", "09:30:00.25"),
        ("TIME", "09:30:00", "09:30:00"),  # ACR-NEMA style
        ("DATETIME", "20261130093000", "2026-11-30 09:30:00"),
        ("DATETIME", "202611300930", "2026-11-30 09:30"),
        ("DATETIME", "20261130", "2026-11-30"),
        ("DATETIME", "20261130093000.5+0100", "2026-11-30 09:30:00.5 +01:00"),
        ("DATETIME", "20261130093000-0000", "2026-11-30 09:30:00 -00:00"),
        ("TIME", "256100", "256100"),  # not a valid TM: shown as sent
        ("DATETIME", "2026-11-30", "2026-11-30"),  # not DT: as sent
    ],
)
def test_narrative_when(vtype: str, value: str, shown: str) -> None:
    assert narrative_when(vtype, value) == shown


def _section_note(bundle: dict[str, Any], loinc: str) -> str:
    for note in one(bundle, "DiagnosticReport").get("note", []):
        if any(loinc in str(ext) for ext in note.get("extension", [])):
            return str(note["text"])
    raise AssertionError("no such note")


def test_date_time_datetime_items_in_the_report(converter: Any) -> None:
    """Through the engine: the three items read alike; a DATETIME without an offset gets none in the text
    (the file's Timezone Offset From UTC and the sender's zone are for structured dateTimes only)."""
    data = build_sr(
        container(
            FINDINGS,
            item("DATE", code("111060", "DCM", "Study Date"), "20261130"),
            item("TIME", code("111061", "DCM", "Study Time"), "093000"),
            item("DATETIME", code("111526", "DCM", "DateTime Started"), "20261130093000"),
            item("DATETIME", code("113810", "DCM", "End of X-Ray Irradiation"), "20261130094500+0100"),
            item("TEXT", FINDING, "No acute findings."),
        )
    )
    result = converter.convert(data)
    assert not result.rejections, [r.reason for r in result.rejections]
    text = _section_note(load(result.outputs[0].body), "59776-5")
    assert text.splitlines() == [
        "Study Date: 2026-11-30",
        "Study Time: 09:30:00",
        "DateTime Started: 2026-11-30 09:30:00",
        "End of X-Ray Irradiation: 2026-11-30 09:45:00 +01:00",
        "No acute findings.",
    ]
    assert "+00:00" not in text and "093000" not in text


def test_control_characters_in_sr_text_never_reach_fhir(converter: Any) -> None:
    """Form feed and vertical tab become line breaks, other C0 controls (SOH, ESC, NUL) are dropped,
    in every string and in the XHTML narrative (issue 8; the sanitizer lives in pipelines/output)."""
    raw = b"Line one.\x0cLine two.\x0bLine three.\x01\x1b end\x00 of text."
    result = converter.convert(build_sr(container(FINDINGS, item("TEXT", FINDING, raw))))
    assert not result.rejections, [r.reason for r in result.rejections]
    bundle = load(result.outputs[0].body)
    bad = sorted({f"U+{ord(c):04X}" for s in _strings(bundle) for c in s if ord(c) < 0x20 and c not in "\t\r\n"})
    assert not bad, bad
    text = _section_note(bundle, "59776-5")
    assert text.splitlines() == ["Line one.", "Line two.", "Line three. end of text."]
