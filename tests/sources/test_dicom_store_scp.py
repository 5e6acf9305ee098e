"""C-STORE SCP against real peers over 127.0.0.1: dcmtk's storescu and a pynetdicom SCU."""

from __future__ import annotations

import io
import json
import logging
import re
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.pdu import A_ASSOCIATE_RQ

from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from engine.observability.metrics import Metrics
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sources.base import CONTENT_DICOM, Landing
from engine.sources.dicom_scp import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_CONVERSION_FAILED,
    STATUS_NOT_A_REPORT,
    STATUS_OUT_OF_RESOURCES,
    STORAGE_SOP_CLASSES,
    ScpSettings,
    StoreScp,
)
from engine.sources.door import DoorRejects
from pipelines.context import MappingContext
from tests.sources.source_helpers import (
    TESTDATA,
    FailingLanding,
    SlowLanding,
    SqliteLanding,
    require_tool,
    wait_until_refused,
)

# every sample dcmtk can read (Tag-0040-A170-VR-CS.dcm is a deliberately broken file)
SAMPLES = [p for p in sorted(TESTDATA.glob("dicom-sr-*/*.dcm")) if "A170" not in p.name]
DEFLATED = TESTDATA / "dicom-sr-dcm4che" / "report_dfl.dcm"
COMPREHENSIVE = TESTDATA / "dicom-sr-dcmqi" / "sr.dcm"  # Comprehensive SR, explicit VR little endian
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NOT_A_REPORT = TESTDATA / "dicom-sr-openrem" / "ESR_non-dose.dcm"  # an SR with an empty content tree
CONVERTER = Converter(load_mapping_context(None))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[StoreScp] = []

    def _serve(landing: Landing, **settings: Any) -> StoreScp:
        door = DoorRejects(FolderDeadLetters(tmp_path / "dlq"), Metrics())
        scp = StoreScp(
            ScpSettings.from_mapping({"host": "127.0.0.1", "port": 0, **settings}),
            landing,
            converter=CONVERTER,
            door=door,
        )
        scp.start()
        started.append(scp)
        return scp

    yield _serve
    for scp in started:
        scp.stop(timeout=5)


def storescu(
    port: int, *files: Path, calling: str = "STORESCU", called: str = "ENGINE", extra: tuple[str, ...] = ()
) -> Any:
    tool = require_tool("storescu")
    return subprocess.run(
        [tool, "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def scu(*contexts: tuple[str, str]) -> AE:
    ae = AE(ae_title="PYNETDICOM")
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    return ae


def test_storescu_sends_every_sample_report(serve: Any, landing: SqliteLanding) -> None:
    assert len(SAMPLES) >= 15
    scp = serve(landing, ack="stored")  # 0x0000 = stored (non-reports included)
    result = storescu(scp.port, *SAMPLES, extra=("-R",))  # -R: propose exactly the classes of the files
    assert result.returncode == 0, result.stderr
    rows = landing.rows()
    assert len(rows) == len(SAMPLES)
    for (payload, content_type, source, headers), path in zip(rows, SAMPLES, strict=True):
        original = pydicom.dcmread(path)
        landed = pydicom.dcmread(io.BytesIO(payload))  # a valid Part 10 file: preamble, DICM, file meta
        assert payload[128:132] == b"DICM"
        assert landed.SOPInstanceUID == original.SOPInstanceUID == headers["dicom.sop-instance-uid"], path.name
        assert landed.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert landed == original, path.name  # same elements and values as the file storescu sent
        assert headers["dicom.sop-class-uid"] == original.SOPClassUID and original.SOPClassUID in STORAGE_SOP_CLASSES
        assert headers["dicom.study-instance-uid"] == original.StudyInstanceUID
        assert headers["dicom.calling-ae"] == "STORESCU"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", headers["source.endpoint"])
        assert (content_type, source) == (CONTENT_DICOM, "dicom")
    assert scp.counters["stored"] == len(SAMPLES)


def test_pynetdicom_scu_deflated_transfer_syntax_and_echo(serve: Any, landing: SqliteLanding) -> None:
    original = pydicom.dcmread(DEFLATED)
    scp = serve(landing)
    ae = scu((original.SOPClassUID, DeflatedExplicitVRLittleEndian), ("1.2.840.10008.1.1", ExplicitVRLittleEndian))
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="ENGINE")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(original).Status == 0x0000
    finally:
        assoc.release()
    [(payload, _, _, headers)] = landing.rows()
    landed = pydicom.dcmread(io.BytesIO(payload))
    assert landed.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian  # stored as sent, still deflated
    assert landed.SOPInstanceUID == original.SOPInstanceUID and landed == original
    assert headers["dicom.calling-ae"] == "PYNETDICOM"


def _ct_image(path: Path) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0\1" * 4
    ds.save_as(path, enforce_file_format=True)
    return path


def test_image_storage_is_not_accepted(serve: Any, landing: SqliteLanding, tmp_path: Path) -> None:
    scp = serve(landing)
    ct = _ct_image(tmp_path / "ct.dcm")
    result = storescu(scp.port, ct, extra=("-R",))
    assert result.returncode != 0
    assert "No presentation context" in result.stderr or "No Acceptable Presentation Contexts" in result.stderr
    assoc = scu((CT_IMAGE_STORAGE, ExplicitVRLittleEndian)).associate("127.0.0.1", scp.port, ae_title="ENGINE")
    try:
        assert [c.abstract_syntax for c in assoc.accepted_contexts] == []
    finally:
        if assoc.is_established:
            assoc.release()
    assert landing.rows() == []


def test_calling_ae_allow_list(serve: Any, landing: SqliteLanding) -> None:
    scp = serve(landing, allowed_calling_aes=["MODALITY1"])
    sample = SAMPLES[0]
    rejected = storescu(scp.port, sample, calling="INTRUDER", extra=("-R",))
    assert rejected.returncode != 0
    assert "Association Rejected" in rejected.stderr
    assert landing.rows() == []
    accepted = storescu(scp.port, sample, calling="MODALITY1", extra=("-R",))
    assert accepted.returncode == 0, accepted.stderr
    [(_, _, _, headers)] = landing.rows()
    assert headers["dicom.calling-ae"] == "MODALITY1"


def test_landing_failure_answers_out_of_resources(serve: Any) -> None:
    failing = FailingLanding()
    scp = serve(failing)
    original = pydicom.dcmread(SAMPLES[0])
    assoc = scu((original.SOPClassUID, ExplicitVRLittleEndian)).associate("127.0.0.1", scp.port, ae_title="ENGINE")
    try:
        assert assoc.send_c_store(original).Status == STATUS_OUT_OF_RESOURCES
    finally:
        assoc.release()
    result = storescu(scp.port, SAMPLES[0], extra=("-R", "-v"))  # dcmtk reports the refusal as well
    assert result.returncode != 0
    assert "Received Store Response (Refused: OutOfResources)" in result.stderr, result.stderr
    assert failing.calls == 2 and scp.counters["refused"] == 2


def _undecodable_file(path: Path) -> Path:
    """Valid file meta, then SOP Class/Instance UID and a sequence item that runs past the end."""

    def element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value

    sop_class, sop_instance = UID("1.2.840.10008.5.1.4.1.1.88.33"), generate_uid()
    body = element(0x0008, 0x0016, b"UI", sop_class.encode() + b"\0")
    body += element(
        0x0008, 0x0018, b"UI", sop_instance.encode().ljust(len(sop_instance) + len(sop_instance) % 2, b"\0")
    )
    body += struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
    body += struct.pack("<HHI", 0xFFFE, 0xE000, 100) + b"xx"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = DicomBytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta)
    path.write_bytes(buffer.getvalue() + body)
    return path


def test_undecodable_dataset_cannot_be_understood(
    serve: Any, landing: SqliteLanding, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the SCU sends the file bytes unparsed
    scp = serve(landing)
    garbage = _undecodable_file(tmp_path / "garbage.dcm")
    ae = scu(("1.2.840.10008.5.1.4.1.1.88.33", ExplicitVRLittleEndian))
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="ENGINE")
    try:
        assert assoc.send_c_store(garbage).Status == STATUS_CANNOT_UNDERSTAND
        assert assoc.send_c_store(COMPREHENSIVE).Status == 0x0000  # the association goes on
    finally:
        assoc.release()
    assert scp.counters["undecodable"] == 1
    assert scp.door.counts == {("dicom", "undecodable"): 1}  # counted and kept in the dead letters
    [sidecar] = [json.loads(p.read_text()) for p in (tmp_path / "dlq").glob("*.json")]
    assert sidecar["headers"]["door.reason"] == "undecodable" and sidecar["payload_bytes"] > 0
    [(payload, *_)] = landing.rows()  # the undecodable dataset was not landed
    assert payload.endswith(COMPREHENSIVE.read_bytes()[-256:])
    assert pydicom.dcmread(io.BytesIO(payload)).SOPInstanceUID == pydicom.dcmread(COMPREHENSIVE).SOPInstanceUID


def test_tls(serve: Any, landing: SqliteLanding, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    scp = serve(landing, tls={"cert": str(cert), "key": str(key)})
    original = pydicom.dcmread(SAMPLES[0])
    ae = scu((original.SOPClassUID, ExplicitVRLittleEndian))
    plain = ae.associate("127.0.0.1", scp.port, ae_title="ENGINE")
    assert not plain.is_established
    ctx = ssl.create_default_context(cafile=str(cert))
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="ENGINE", tls_args=(ctx, "localhost"))
    assert assoc.is_established
    try:
        assert assoc.send_c_store(original).Status == 0x0000
    finally:
        assoc.release()
    # dcmtk's storescu over TLS, as the README shows it
    result = storescu(scp.port, SAMPLES[0], extra=("-R", "+tla", "+cf", str(cert)))
    assert result.returncode == 0, result.stderr
    payloads = [r[0] for r in landing.rows()]
    assert [pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID for p in payloads] == [original.SOPInstanceUID] * 2


def test_stop_answers_in_flight_stores_and_closes_idle_associations(landing: SqliteLanding) -> None:
    slow = SlowLanding(landing)
    scp = StoreScp(ScpSettings(port=0), slow)
    scp.start()
    original = pydicom.dcmread(SAMPLES[0])
    ae = scu((original.SOPClassUID, ExplicitVRLittleEndian))
    idle = ae.associate("127.0.0.1", scp.port, ae_title="ENGINE")
    busy = ae.associate("127.0.0.1", scp.port, ae_title="ENGINE")
    assert idle.is_established and busy.is_established
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.append(busy.send_c_store(original).Status))
    sender.start()
    assert slow.started.wait(10)
    stopper = threading.Thread(target=scp.stop, kwargs={"timeout": 10})
    stopper.start()
    assert wait_until_refused(scp.port)  # no longer accepting
    assert not ae.associate("127.0.0.1", scp.port, ae_title="ENGINE").is_established
    assert statuses == []
    slow.release.set()
    sender.join(10)
    stopper.join(15)
    assert not stopper.is_alive()
    assert statuses == [0x0000]  # answered only after the landing returned
    assert [pydicom.dcmread(io.BytesIO(r[0])).SOPInstanceUID for r in landing.rows()] == [original.SOPInstanceUID]
    deadline = time.monotonic() + 5
    while (idle.is_alive() or busy.is_alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not idle.is_established and not busy.is_established


def test_identifier_logging_is_off(serve: Any, landing: SqliteLanding) -> None:
    serve(landing)
    assert _config.LOG_REQUEST_IDENTIFIERS is False and _config.LOG_RESPONSE_IDENTIFIERS is False


@pytest.mark.parametrize(
    ("mapping", "error"),
    [
        ({"aetitle": "X"}, "unknown key(s) aetitle"),
        ({"ae_title": "A_VERY_LONG_AE_TITLE_X"}, "dicom.ae_title: expected an AE title of 1 to 16"),
        ({"allowed_calling_aes": "MODALITY1"}, "dicom.allowed_calling_aes: expected a list"),
        ({"allowed_calling_aes": [""]}, "dicom.allowed_calling_aes: expected an AE title"),
        ({"port": -1}, "dicom.port: expected an integer between 0 and 65535"),
        ({"max_pdu": "16k"}, "dicom.max_pdu"),
        ({"tls": {"key": "k.pem"}}, "dicom.tls.cert: required"),
        ({"ack": "yes"}, "dicom.ack: expected 'stored' or 'converted'"),
        ({"host": "0.0.0.0"}, "dicom.host: 0.0.0.0 is reachable from other machines"),
        ({"host": "10.1.2.3", "insecure": 1}, "dicom.insecure: expected true or false"),
    ],
)
def test_settings_errors(mapping: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        ScpSettings.from_mapping(mapping)


def test_settings_values() -> None:
    settings = ScpSettings.from_mapping(
        {"host": "0.0.0.0", "port": 104, "ae_title": "ENGINE", "allowed_calling_aes": ["CT1", "MR2"], "max_pdu": 0}
    )
    assert settings.allowed_calling_aes == ("CT1", "MR2") and settings.max_pdu == 0 and settings.tls is None


def test_ack_converted_statuses(serve: Any, landing: SqliteLanding, tmp_path: Path) -> None:
    """0x0000 converted; 0xC001 + Error Comment not a report; 0xC002 conversion failed; stored in every case."""
    scp = serve(landing)
    report, not_report = pydicom.dcmread(COMPREHENSIVE), pydicom.dcmread(NOT_A_REPORT)
    ae = scu(
        (report.SOPClassUID, ExplicitVRLittleEndian), (not_report.SOPClassUID, ExplicitVRLittleEndian)
    )
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="ENGINE")
    try:
        assert assoc.send_c_store(report).Status == 0x0000
        filtered = assoc.send_c_store(not_report)
        assert filtered.Status == STATUS_NOT_A_REPORT
        assert filtered.ErrorComment.startswith("stored; not a report: ") and len(filtered.ErrorComment) <= 64
    finally:
        assoc.release()
    strict = StoreScp(
        ScpSettings(port=0), landing, converter=Converter(MappingContext(max_message_bytes=1000)), door=DoorRejects()
    )
    strict.start()
    try:
        assoc = ae.associate("127.0.0.1", strict.port, ae_title="ENGINE")
        failed = assoc.send_c_store(report)
        assoc.release()
    finally:
        strict.stop(timeout=5)
    assert failed.Status == STATUS_CONVERSION_FAILED and "exceeds" in failed.ErrorComment
    uids = [pydicom.dcmread(io.BytesIO(r[0])).SOPInstanceUID for r in landing.rows()]
    assert uids == [report.SOPInstanceUID, not_report.SOPInstanceUID, report.SOPInstanceUID]
    assert (scp.counters["converted"], scp.counters["filtered"], strict.counters["failed"]) == (1, 1, 1)
    metrics = scp.door.metrics.exposition().decode()
    assert 'engine_ingress_outcomes_total{outcome="filtered",source="dicom"} 1.0' in metrics


def test_unknown_called_and_calling_ae_are_refused_and_logged(
    serve: Any, landing: SqliteLanding, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.sources.dicom_scp")
    scp = serve(landing, allowed_calling_aes=["MODALITY1"])
    wrong_called = storescu(scp.port, COMPREHENSIVE, calling="MODALITY1", called="NOTENGINE", extra=("-R",))
    assert wrong_called.returncode != 0 and "Association Rejected" in wrong_called.stderr
    intruder = scu((pydicom.dcmread(COMPREHENSIVE).SOPClassUID, ExplicitVRLittleEndian))
    intruder.ae_title = "INTRUDER"
    assert not intruder.associate("127.0.0.1", scp.port, ae_title="ENGINE").is_established
    assert storescu(scp.port, COMPREHENSIVE, calling="MODALITY1", extra=("-R",)).returncode == 0
    assert len(landing.rows()) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.sources.dicom_scp"]
    refused = [line for line in lines if "association refused" in line]
    assert len(refused) == 2
    assert "'NOTENGINE' is not this SCP's (ENGINE)" in refused[0] and "MODALITY1" in refused[0]
    assert "'INTRUDER' is not in allowed_calling_aes" in refused[1] and "127.0.0.1:" in refused[1]
    assert any("association accepted" in line and "MODALITY1" in line for line in lines)
    assert scp.door.counts == {("dicom", "refused-association"): 2}
    metrics = scp.door.metrics.exposition().decode()
    assert 'engine_ingress_rejected_total{reason="refused-association",source="dicom"} 2.0' in metrics
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "dlq").glob("*.json")]
    assert sorted(s["headers"]["dicom.calling-ae"] for s in sidecars) == ["INTRUDER", "MODALITY1"]
    assert all(s["error_class"] == "IngressRejected" for s in sidecars)
    for s in sidecars:  # the association request itself is kept: an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2)
        rq = A_ASSOCIATE_RQ()
        rq.decode((tmp_path / "dlq" / s["payload_file"]).read_bytes())
        assert rq.calling_ae_title == s["headers"]["dicom.calling-ae"]
        assert s["headers"]["door.content-type"] == "application/dicom-pdu"
