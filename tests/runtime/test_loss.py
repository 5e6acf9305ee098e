"""Loss test (issue 5 item 8): 1,000 ORU over MLLP and 50 SR over C-STORE into a real ``engine run``
process that is killed with SIGKILL at random moments and restarted.

Senders behave like real ones: a message counts as acknowledged only on ``AA`` / status ``0x0000``,
and anything not acknowledged (connection dropped by the kill) is sent again. Afterwards every message
must be in the outbox (byte-identical to the converter's output) or in the dead letters, exactly once
per report id / control id / SOP Instance UID, with nothing unfinished in the store and no partial files.
Seed: ``LOSS_SEED`` (default 20261123); the kill times also depend on scheduling, by design.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from engine.convert import Converter
from tests.runtime.runtime_harness import TESTDATA, EngineConfig, EngineProcess, MllpClient, ack_code

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

SCOUT = TESTDATA / "hl7v2-washu-scout" / "messages"
SR_TEMPLATES = [  # Basic Text, Comprehensive (TID 1500), Comprehensive 3D, dose RDSR, and one the mapper rejects
    TESTDATA / name
    for name in (
        "dicom-sr-pydicom/reportsi.dcm",
        "dicom-sr-dcmqi/sr.dcm",
        "dicom-sr-highdicom/sr_document.dcm",
        "dicom-sr-openrem/CT-RDSR-Siemens-Multi-2.dcm",
        "dicom-sr-orthanc-tests/StructuredReports-IM0.dcm",
    )
]
N_ORU, N_SR, MLLP_CONNECTIONS = 1000, 50, 2


def vary_oru(template: bytes, i: int) -> bytes:
    """A distinct report: new MSH-10 control id, placer/filler order numbers and accession fields."""
    tag = f"L{i:05d}".encode()
    segments = []
    for segment in template.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
        fields = segment.split(b"|")
        if fields[0] == b"MSH" and len(fields) > 9:
            fields[9] = b"LOSS." + str(i).encode()
        elif fields[0] in (b"ORC", b"OBR"):
            numbers = (2, 3) if fields[0] == b"ORC" else (2, 3, 18, 19, 20)
            fields.extend([b""] * (max(numbers) + 1 - len(fields)))
            for n in numbers:
                components = fields[n].split(b"^")
                components[0] = tag + b"-" + str(n).encode()
                fields[n] = b"^".join(components)
        segments.append(b"|".join(fields))
    return b"\r".join(segments)


def vary_sr(template: pydicom.Dataset, i: int) -> pydicom.Dataset:
    ds = copy.deepcopy(template)
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"loss-sr-{i}"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[f"loss-study-{i}"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"loss-series-{i}"])
    ds.AccessionNumber = f"LSR{i:05d}"
    return ds


class Senders:
    """MLLP and C-STORE senders that resend until acknowledged."""

    def __init__(self, cfg: EngineConfig, orus: list[bytes], srs: list[pydicom.Dataset]) -> None:
        self.cfg, self.orus, self.srs = cfg, orus, srs
        self.acked_oru: set[int] = set()
        self.acked_sr: set[int] = set()
        self.resends = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._mllp, args=(range(k, len(orus), MLLP_CONNECTIONS),), daemon=True)
            for k in range(MLLP_CONNECTIONS)
        ]
        self.threads.append(threading.Thread(target=self._dicom, daemon=True))
        self.deadline = time.monotonic() + 240

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def _mllp(self, indexes: range) -> None:
        client: MllpClient | None = None
        for i in indexes:
            while time.monotonic() < self.deadline:
                try:
                    if client is None:
                        client = MllpClient(self.cfg.mllp_port, timeout=10)
                    if ack_code(client.send(self.orus[i])) == "AA":
                        with self.lock:
                            self.acked_oru.add(i)
                        break
                except OSError:
                    if client is not None:
                        client.close()
                    client = None
                    time.sleep(0.05)
                with self.lock:
                    self.resends += 1
        if client is not None:
            client.close()

    def _dicom(self) -> None:
        ae = AE(ae_title="LOSSTEST")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        for i, ds in enumerate(self.srs):
            ae.requested_contexts = []
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            while time.monotonic() < self.deadline:
                assoc = ae.associate("127.0.0.1", self.cfg.dicom_port, ae_title="ENGINE")
                if assoc.is_established:
                    try:
                        status = assoc.send_c_store(ds)
                    except Exception as exc:  # aborted association
                        self.errors.append(type(exc).__name__)
                        status = None
                    if assoc.is_established:
                        assoc.release()
                    if status is not None and getattr(status, "Status", None) == 0x0000:
                        with self.lock:
                            self.acked_sr.add(i)
                        break
                with self.lock:
                    self.resends += 1
                time.sleep(0.05)
            time.sleep(0.02)  # spread the SRs over the ORU traffic


def _unfinished(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM messages WHERE status IN ('received','mapped')").fetchone()[0])


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    cfg = EngineConfig(tmp_path, extra={"worker": {"poll_timeout": 0.2, "drain_timeout": 30, "batch_size": 50}})
    proc = EngineProcess(cfg)
    yield proc
    proc.stop_quietly()


def test_no_acknowledged_message_is_lost_across_sigkills(engine: EngineProcess) -> None:
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    rng = random.Random(int(os.environ.get("LOSS_SEED", "20261123")))
    templates = sorted(SCOUT.glob("*.hl7"))
    orus = [vary_oru(templates[i % len(templates)].read_bytes(), i) for i in range(N_ORU)]
    sr_templates = [pydicom.dcmread(path) for path in SR_TEMPLATES]
    srs = [vary_sr(sr_templates[i % len(sr_templates)], i) for i in range(N_SR)]
    assert len({str(ds.SOPInstanceUID) for ds in srs}) == N_SR

    # What must come out, computed with the same converter `engine map` uses.
    converter = Converter()
    expected_files: dict[str, bytes] = {}
    report_of: dict[str, str] = {}
    rejected_controls: set[str] = set()
    filtered_orus = 0  # not reports (status-only ORUs): finished as "filtered", no output, no dead letter
    for i, message in enumerate(orus):
        conversion = converter.convert(message)
        for out in conversion.outputs:
            expected_files[f"{out.bundle_id}.json"] = out.body
            report_of[f"{out.bundle_id}.json"] = out.report_id
        if conversion.rejections:
            rejected_controls.add(f"LOSS.{i}")
        filtered_orus += bool(conversion.filtered and not conversion.outputs)
    # every ORU is a distinct report, a dead letter or filtered
    assert len(set(report_of.values())) + len(rejected_controls) + filtered_orus == N_ORU
    sr_bundles: dict[str, bytes] = {}
    rejected_srs: set[str] = set()
    for ds in srs:
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        conversion = converter.convert(buffer.getvalue())
        for out in conversion.outputs:
            sr_bundles[f"{out.bundle_id}.json"] = out.body
            report_of[f"{out.bundle_id}.json"] = out.report_id
        if conversion.rejections:
            rejected_srs.add(str(ds.SOPInstanceUID))

    cfg = engine.config
    engine.start()
    senders = Senders(cfg, orus, srs)
    started = time.monotonic()
    senders.start()
    kills = 0
    while senders.alive() or kills < 4:
        time.sleep(rng.uniform(0.2, 1.0))
        engine.kill()  # SIGKILL at a random moment: mid-landing, mid-mapping, mid-write, mid-ack
        kills += 1
        time.sleep(rng.uniform(0.0, 0.2))
        for _attempt in range(3):  # the ports may take a moment to be bindable again
            try:
                engine.start()
                break
            except AssertionError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"engine did not restart: {engine.log_tail()}")
    for t in senders.threads:
        t.join(5)
    sending = time.monotonic() - started
    assert len(senders.acked_oru) == N_ORU, f"not all ORU acknowledged: {N_ORU - len(senders.acked_oru)} missing"
    assert len(senders.acked_sr) == N_SR, f"not all SR acknowledged: {N_SR - len(senders.acked_sr)} missing"

    db = cfg.root / "store" / "messages.db"
    deadline = time.monotonic() + 90
    while _unfinished(db) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _unfinished(db) == 0, engine.log_tail()
    assert engine.terminate() == 0

    # Outbox: exactly the expected files, byte-identical, one per report id, no partial files.
    outbox = {p.name: p for p in cfg.outbox.iterdir()}
    assert not [n for n in outbox if n.startswith(".")], "temporary files left behind"
    hl7_files = {n for n in outbox if n not in sr_bundles}
    assert hl7_files == set(expected_files), (
        f"missing {len(set(expected_files) - hl7_files)}, unexpected {len(hl7_files - set(expected_files))}"
    )
    assert all(outbox[n].read_bytes() == body for n, body in expected_files.items())
    assert set(sr_bundles) <= set(outbox)  # every SR that maps is there, byte-identical
    assert all(outbox[n].read_bytes() == body for n, body in sr_bundles.items())
    per_report = Counter(report_of[n] for n in outbox)
    assert set(per_report.values()) == {1}

    # Dead letters: every rejected ORU (by control id) and SR (by SOP UID) exactly once.
    sidecars = [json.loads(p.read_text()) for p in cfg.dlq.glob("*.json")]
    assert not [p for p in cfg.dlq.iterdir() if p.name.startswith(".")]
    controls = Counter(s["headers"].get("hl7.control-id") for s in sidecars if s["source"] == "mllp")
    assert set(controls) == rejected_controls and set(controls.values()) <= {1}
    sops = Counter(s["headers"].get("dicom.sop-instance-uid") for s in sidecars if s["source"] == "dicom")
    assert set(sops) == rejected_srs and set(sops.values()) <= {1}
    assert all((cfg.dlq / s["payload_file"]).exists() for s in sidecars)
    assert len(sidecars) == len(rejected_controls) + len(rejected_srs)
    print(
        f"loss test: {N_ORU} ORU + {N_SR} SR acknowledged in {sending:.1f}s with {kills} SIGKILLs, "
        f"{senders.resends} resends; {len(outbox)} Bundles, {len(sidecars)} dead letters"
    )
