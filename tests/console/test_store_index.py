"""PHI-free search keys, history triggers and the migration of version-1 store files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from engine.message_index import MessageIndexer, accession_hash
from engine.store import MessageStore
from engine.store_schema import SCHEMA_VERSION
from pipelines.common.ids import hashed_key
from pipelines.context import MappingContext, SenderProfile
from tests.console.conftest import DEAD_ORU, GOOD_ORU, TESTDATA, Deployment


def test_hl7_keys_follow_the_sender_profile() -> None:
    default = MessageIndexer().index(GOOD_ORU, "application/hl7-v2")
    assert default.message_type == "ORU^R01^ORU_R01"
    assert default.control_id == "CTRL-GOOD-1"
    assert default.accession_hashes == (accession_hash("ACC-GOOD-1"),)
    assert accession_hash(" ACC-GOOD-1 ") == hashed_key("accession", "ACC-GOOD-1")
    # a sender whose accession is in OBR-3 (like the WashU feed) is indexed from that field
    ctx = MappingContext(senders=(SenderProfile(name="ris", sending_facility="HOSP", accession_field="OBR-3"),))
    assert MessageIndexer(ctx).index(GOOD_ORU, "application/hl7-v2").accession_hashes == (accession_hash("F1"),)


def test_every_message_of_a_batch_file_gives_its_accession() -> None:
    second = GOOD_ORU.replace(b"CTRL-GOOD-1", b"CTRL-GOOD-2").replace(b"ACC-GOOD-1", b"ACC-GOOD-2")
    keys = MessageIndexer().index(GOOD_ORU + b"\n" + second, "application/hl7-v2")
    assert keys.control_id == "CTRL-GOOD-1"
    assert set(keys.accession_hashes) == {accession_hash("ACC-GOOD-1"), accession_hash("ACC-GOOD-2")}


def test_dicom_keys_from_a_shared_sr() -> None:
    import pydicom
    from pydicom.uid import UID

    path = next(p for p in sorted(TESTDATA.glob("dicom-sr-*/**/*")) if p.is_file() and p.suffix == ".dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    keys = MessageIndexer().index(path.read_bytes(), "application/dicom")
    assert keys.control_id == str(ds.SOPInstanceUID)
    assert keys.message_type == UID(str(ds.SOPClassUID)).keyword
    expected = (accession_hash(str(ds.AccessionNumber)),) if str(ds.get("AccessionNumber", "")).strip() else ()
    assert keys.accession_hashes == expected


def test_unreadable_bytes_land_with_empty_keys(deployment: Deployment) -> None:
    eid = deployment.land(b"\x00\x01garbage")
    row = deployment.store.select("SELECT message_type, control_id FROM messages WHERE id=?", (int(eid),))
    assert row == [(None, None)]


def test_no_phi_in_index_columns(deployment: Deployment) -> None:
    eid = deployment.land(GOOD_ORU)
    rows = deployment.store.select("SELECT message_type, control_id FROM messages WHERE id=?", (int(eid),))
    hashes = deployment.store.select("SELECT accession_hash FROM message_accessions WHERE message_id=?", (int(eid),))
    text = json.dumps([rows, hashes])
    assert "DOE" not in text and "ACC-GOOD-1" not in text and "No acute" not in text


def test_history_records_every_transition(deployment: Deployment) -> None:
    good, dead = deployment.land(GOOD_ORU), deployment.land(DEAD_ORU)
    deployment.process()
    assert deployment.store.get(good).status == "published"  # type: ignore[union-attr]
    assert deployment.store.get(dead).status == "failed"  # type: ignore[union-attr]
    assert deployment.store.requeue(ids=[dead]) == 1
    deployment.process()
    events = deployment.store.select(
        "SELECT event, status, attempts, replays, error_class FROM message_events WHERE message_id=? ORDER BY id",
        (int(dead),),
    )
    assert [e[0] for e in events] == ["mapped", "failed", "replayed", "mapped", "failed"]
    assert events[1][4] == "ParseError" and events[-1][2:4] == (2, 1)
    good_events = deployment.store.select(
        "SELECT event, outputs FROM message_events WHERE message_id=? ORDER BY id", (int(good),)
    )
    assert [e[0] for e in good_events] == ["mapped", "published"]
    assert json.loads(good_events[-1][1]) == deployment.store.get(good).outputs  # type: ignore[union-attr]


V1_SCHEMA = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, content_type TEXT NOT NULL, headers TEXT NOT NULL,
    payload BLOB NOT NULL, status TEXT NOT NULL, received_at REAL NOT NULL, updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, replays INTEGER NOT NULL DEFAULT 0, error_class TEXT, error_reason TEXT,
    outputs TEXT
);
CREATE INDEX messages_status_id ON messages(status, id);
CREATE INDEX messages_received_at ON messages(received_at);
"""


def test_a_version_1_store_is_migrated_and_searchable(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute(
        "INSERT INTO messages (source, content_type, headers, payload, status, received_at, updated_at, attempts, "
        "error_class, error_reason, outputs) VALUES ('mllp', 'application/hl7-v2', '{}', ?, 'failed', 100, 200, 1, "
        "'ParseError', 'bad', '[]')",
        (DEAD_ORU,),
    )
    conn.execute(
        "INSERT INTO messages (source, content_type, headers, payload, status, received_at, updated_at) "
        "VALUES ('inbox', 'application/hl7-v2', '{}', ?, 'received', 300, 300)",
        (GOOD_ORU,),
    )
    conn.commit()
    conn.close()
    store = MessageStore(path)
    try:
        assert store.select("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        rows = store.select("SELECT id, message_type, control_id, status FROM messages ORDER BY id")
        assert rows == [(1, "ORU^R01^ORU_R01", "CTRL-DEAD-1", "failed"), (2, "ORU^R01^ORU_R01", "CTRL-GOOD-1",
                                                                           "received")]
        assert store.select("SELECT message_id FROM message_accessions WHERE accession_hash=?",
                            (accession_hash("ACC-GOOD-1"),)) == [(2,)]
        assert store.select("SELECT message_id, event, at FROM message_events ORDER BY message_id, id") == [
            (1, "failed", 200.0)
        ]
        assert store.get("1").payload == DEAD_ORU  # type: ignore[union-attr]  # nothing lost
    finally:
        store.close()
    # opening again is a no-op (no duplicate events)
    store = MessageStore(path)
    try:
        assert store.select("SELECT COUNT(*) FROM message_events") == [(1,)]
    finally:
        store.close()


def test_the_single_message_fast_path_gives_the_tokenizer_keys_on_every_shared_sample() -> None:
    from pipelines.hl7v2.framing import split_stream

    ctx = MappingContext(senders=(SenderProfile(name="obr3", sending_facility="WASHU", accession_field="OBR-3"),))
    seen = 0
    for indexer in (MessageIndexer(), MessageIndexer(ctx)):
        for path in sorted(TESTDATA.glob("hl7v2-*/**/*")):
            if not path.is_file():
                continue
            for chunk in split_stream(path.read_bytes()):
                if chunk.junk or not chunk.data.startswith(b"MSH"):
                    continue
                seen += 1
                single = indexer._hl7_single(chunk.data)
                assert single == indexer._hl7_stream(chunk.data), f"{path.name}: {single}"
    assert seen > 500
