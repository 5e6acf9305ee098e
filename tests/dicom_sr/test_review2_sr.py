"""SR faults found by the second review (README "Mapping review (second tryout)"): text bytes under the
default repertoire (no Specific Character Set) that are UTF-8. Fails on the code before its fix."""

# ruff: noqa: RUF001  (report text with an en dash is the point)

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.dicom_sr.builder import build_sr, container, item
from tests.dicom_sr.helpers import load, one
from tests.dicom_sr.test_sr_charset import FINDING, FINDINGS, READERS, _tree


@pytest.mark.parametrize("reader", READERS)
def test_undeclared_utf8_text_is_read_as_utf8(reader: str) -> None:
    """No (0008,0005) (ISO_IR 6 allows no byte above 0x7F) and UTF-8 bytes: read as UTF-8, not as ISO 8859-1
    mojibake (``GrÃ¶Ã`` + U+009F). Bytes that are not UTF-8 keep the ISO 8859-1 reading."""
    data = build_sr(
        container(
            FINDINGS,
            item("TEXT", FINDING, "Größe 3 cm – unauffällig.".encode()),
            item("TEXT", FINDING, "Milz unauffällig.".encode("latin-1")),
        ),
        charset=None,
    )
    texts = [c.text for c in _tree(data, reader)[0].children]
    assert texts == ["Größe 3 cm – unauffällig.", "Milz unauffällig."]


def test_undeclared_utf8_through_the_engine(converter: Any) -> None:
    data = build_sr(
        container(FINDINGS, item("TEXT", FINDING, "Größe normal.".encode())),
        charset=None,
        patient_name="Müller^Jörg".encode(),
    )
    result = converter.convert(data)
    assert not result.rejections, [r.reason for r in result.rejections]
    bundle = load(result.outputs[0].body)
    assert one(bundle, "Patient")["name"][0]["family"] == "Müller"
    assert "Größe normal." in json.dumps(bundle, ensure_ascii=False)
    assert "\u009f" not in json.dumps(bundle, ensure_ascii=False)
