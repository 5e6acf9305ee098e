"""Input detection by content and the landing-time partition key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine._dispatch import is_dicom
from engine.convert import partition_key_for
from tests.conftest import TESTDATA

SR_JSON = TESTDATA / "dicom-sr-hl7-ig" / "Example-MeasurementReport.json"
SCOUT13 = TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-13-v2.7-Final-20250814-22.hl7"


def test_detection_by_content() -> None:
    part10 = next(TESTDATA.glob("dicom-sr-pydicom/*.dcm")).read_bytes()
    assert is_dicom(part10)
    assert is_dicom(SR_JSON.read_bytes())  # DICOM JSON (PS3.18 F.2)
    assert not is_dicom(SCOUT13.read_bytes())
    assert not is_dicom(b'{"resourceType": "Bundle"}')  # FHIR JSON is not DICOM JSON
    assert not is_dicom(b"")


def test_dicom_json_sr_is_converted(converter: Any, fhir_validator: Any) -> None:
    result = converter.convert(SR_JSON.read_bytes())
    assert not result.rejections, [r.reason for r in result.rejections]
    [out] = result.outputs
    bundle = json.loads(out.body)
    assert bundle["type"] == "document"
    assert not [i for i in fhir_validator.validate(bundle) if i.sev == "error"]


def test_partition_key_at_landing_matches_outputs(converter: Any) -> None:
    raw = SCOUT13.read_bytes()
    [out] = converter.convert(raw).outputs
    assert partition_key_for(raw, converter.context) == out.partition_key
    assert partition_key_for(b"not hl7") is None


def test_header_partition_key_equals_output_key_on_every_sample(converter: Any) -> None:
    """The landing key is read from MSH/OBR or the DICOM header, never by converting: it must still be the
    key of the outputs, for every shared HL7 v2 message and DICOM SR file that converts."""
    from engine.backfill.formats import frames_of, iter_files

    checked = 0
    for f in iter_files(sorted(TESTDATA.glob("hl7v2-*")) + sorted(TESTDATA.glob("dicom-sr-*"))):
        for frame in frames_of(f.path, 1 << 24):
            outputs = converter.convert(frame.raw).outputs
            if outputs:
                assert partition_key_for(frame.raw, converter.context) == outputs[0].partition_key, f.path.name
                checked += 1
    assert checked > 850


def test_uuid_for_is_rfc_uuid5() -> None:
    import uuid

    from pipelines.common.ids import NAMESPACE, uuid_for

    for parts in (("a",), ("Patient", "urn:oid:1.2|x", "é"), ("",)):
        assert uuid_for(*parts) == str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def test_sr_times_without_offset_are_marked_uncertain(converter: Any) -> None:
    import pydicom

    path = TESTDATA / "dicom-sr-pydicom" / "reportsi.dcm"
    assert "TimezoneOffsetFromUTC" not in pydicom.dcmread(path, stop_before_pixels=True)
    [out] = converter.convert(path.read_bytes()).outputs
    comp = json.loads(out.body)["entry"][0]["resource"]
    assert comp["resourceType"] == "Composition"
    assert comp["_date"]["extension"][0]["url"] == "http://hl7.org/fhir/StructureDefinition/uncertainPeriod"


@pytest.mark.parametrize("value", ["Europe/Berlin", "+25:00", "+01:60", "0100"])
def test_time_zones_must_be_utc_offsets(value: str) -> None:
    """A zone name or an impossible offset would silently drop every instant: refused when the config loads."""
    from pipelines.context import MappingContext

    with pytest.raises(ValueError, match="UTC offset"):
        MappingContext.from_mapping({"default_timezone": value})
    with pytest.raises(ValueError, match="UTC offset"):
        MappingContext.from_mapping({"senders": [{"name": "x", "timezone": value}]})
    assert MappingContext.from_mapping({"default_timezone": "+05:30"}).default_timezone == "+05:30"
