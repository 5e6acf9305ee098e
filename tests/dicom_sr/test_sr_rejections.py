"""Inputs that are not reports, or not readable, are rejected with a one-line reason, never a traceback."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from pipelines.context import MappingContext
from pipelines.dicom_sr import map_dicom
from pipelines.errors import InvalidReport, MappingError, ParseError
from pipelines.output import serialize, shape
from tests.dicom_sr.helpers import SR_FILES, file


def _dataset(sop_class: str, **attrs: Any) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5.6.7")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.StudyInstanceUID = "1.2.3.4.5"
    ds.SeriesInstanceUID = "1.2.3.4.5.6"
    ds.PatientID = "P1"
    for key, value in attrs.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _reject(converter: Any, data: bytes) -> str:
    result = converter.convert(data)
    assert not result.outputs
    assert len(result.rejections) == 1
    reason: str = result.rejections[0].reason
    assert reason and "\n" not in reason and "Traceback" not in reason
    assert result.rejections[0].raw == data
    return reason


def _filter(converter: Any, data: bytes) -> str:
    """Not a report: filtered with a one-line reason, never a dead letter."""
    result = converter.convert(data)
    assert not result.outputs and not result.rejections
    assert len(result.filtered) == 1
    reason: str = result.filtered[0].reason
    assert reason and "\n" not in reason and result.filtered[0].category == "UnsupportedMessage"
    return reason


def test_truncated_file(converter: Any) -> None:
    data = file("CT-RDSR-Siemens-Multi-2.dcm").read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 40):
        assert "truncated" in _reject(converter, data[:cut])


def test_image_sop_class(converter: Any) -> None:
    reason = _filter(converter, _dataset("1.2.840.10008.5.1.4.1.1.2", Rows=2, Columns=2, Modality="CT"))
    assert "CT Image Storage" in reason and "not a report" in reason


def test_key_object_selection_and_presentation_state(converter: Any) -> None:
    assert "Key Object Selection" in _filter(converter, _dataset("1.2.840.10008.5.1.4.1.1.88.59"))
    assert "presentation state" in _filter(converter, _dataset("1.2.840.10008.5.1.4.1.1.11.1"))


def test_garbage_behind_a_dicom_preamble(converter: Any) -> None:
    data = b"\0" * 128 + b"DICM" + bytes(random.Random(1).randrange(256) for _ in range(2000))
    reason = _reject(converter, data)
    assert "DICOM" in reason


def test_garbage_bytes(converter: Any) -> None:
    assert _reject(converter, bytes(random.Random(2).randrange(256) for _ in range(3000)))


def test_pdf_object_without_a_pdf() -> None:
    data = _dataset(
        "1.2.840.10008.5.1.4.1.1.104.1",
        EncapsulatedDocument=b"not a pdf!",
        MIMETypeOfEncapsulatedDocument="application/pdf",
    )
    with pytest.raises(InvalidReport, match="not a PDF"):
        map_dicom(data, MappingContext())


def test_oversized_input() -> None:
    with pytest.raises(ParseError, match="exceeds"):
        map_dicom(b"\0" * 2048, MappingContext(max_message_bytes=1024))


@pytest.mark.parametrize("path", SR_FILES, ids=lambda p: p.name)
def test_corrupted_variants_never_crash(path: Any) -> None:
    """Truncations at many offsets and random byte flips: a report or a MappingError, nothing else."""
    data = path.read_bytes()
    rng = random.Random(path.name)
    cases = [data[:n] for n in range(132, len(data), max(1, len(data) // 25))]
    for _ in range(25):
        corrupted = bytearray(data)
        for _ in range(3):
            corrupted[rng.randrange(132, len(corrupted))] = rng.randrange(256)
        cases.append(bytes(corrupted))
    ctx = MappingContext()
    for case in cases:
        try:
            for report in map_dicom(case, ctx):
                serialize(shape(report)[0])
        except MappingError as exc:
            assert str(exc) and "\n" not in str(exc)


def test_encapsulated_cda_becomes_minimal_report(converter: Any, fhir_validator: Any) -> None:
    """No shared CDA sample exists: a synthetic Encapsulated CDA object (SOP Class 104.2)."""
    import base64
    import json

    from tests.conftest import profile_errors

    cda = b'<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"><title>CT report</title></ClinicalDocument>'
    data = _dataset(
        "1.2.840.10008.5.1.4.1.1.104.2",
        EncapsulatedDocument=cda,
        MIMETypeOfEncapsulatedDocument="text/xml",
        AccessionNumber="A-77",
        PatientName="Doe^Jane",
        PatientBirthDate="19700101",
        ContentDate="20240102",
        ContentTime="101500",
    )
    result = converter.convert(data)
    assert not result.rejections and len(result.outputs) == 1
    bundle = json.loads(result.outputs[0].body)
    assert bundle["type"] == "collection" and profile_errors(fhir_validator, bundle) == []
    dr = bundle["entry"][0]["resource"]
    assert base64.b64decode(dr["presentedForm"][0]["data"]).startswith(b"<?xml")
    assert dr["presentedForm"][0]["contentType"] == "text/xml"
    assert dr["basedOn"][0]["identifier"]["value"] == "A-77"
    assert dr["issued"] == "2024-01-02T10:15:00+00:00"
