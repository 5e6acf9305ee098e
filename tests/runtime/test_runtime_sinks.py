"""Folder sink (atomic, overwrite, exact bytes) and folder dead letters (original bytes + sidecar)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.convert import Output
from engine.errors import PermanentError
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sinks.folder import FolderSink
from engine.sources.base import CONTENT_HL7V2, Envelope

ENV = Envelope(id="7", payload=b"MSH|x", content_type=CONTENT_HL7V2, source="mllp", received_at=1.0,
               headers={"control_id": "C1"})


def _out(bundle_id: str, body: bytes) -> Output:
    return Output(bundle_id=bundle_id, body=body, report_id="r", partition_key=None, kind="document")


def test_folder_sink_writes_on_flush_and_overwrites(tmp_path: Path) -> None:
    sink = FolderSink(tmp_path / "out")
    sink.write(_out("b-1", b'{"v":1}'), ENV)
    assert list((tmp_path / "out").iterdir()) == []  # nothing visible before flush
    sink.flush()
    assert (tmp_path / "out" / "b-1.json").read_bytes() == b'{"v":1}'
    sink.write(_out("b-1", b'{"v":2}'), ENV)
    sink.flush()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b-1.json"]
    assert (tmp_path / "out" / "b-1.json").read_bytes() == b'{"v":2}'


def test_folder_sink_rejects_unsafe_bundle_id(tmp_path: Path) -> None:
    sink = FolderSink(tmp_path)
    with pytest.raises(PermanentError):
        sink.write(_out("../escape", b"{}"), ENV)


def test_folder_sink_removes_stale_tmp_and_raises_oserror(tmp_path: Path) -> None:
    (tmp_path / ".tmp-x.json.123").write_bytes(b"partial")
    sink = FolderSink(tmp_path)
    assert not (tmp_path / ".tmp-x.json.123").exists()
    sink.write(_out("b", b"{}"), ENV)
    (tmp_path / "b.json").mkdir()  # os.replace onto a directory fails: OSError reaches the worker
    with pytest.raises(OSError):
        sink.flush()
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_dead_letters_keep_original_bytes_and_reason(tmp_path: Path) -> None:
    dlq = FolderDeadLetters(tmp_path)
    raw = b"MSH|^~\\&|A|B\rPID|1||123||SECRET^NAME\r"
    dlq.put(ENV, raw, "OBR-18 missing", "UnsupportedMessage")
    dlq.put(ENV, raw, "OBR-18 missing", "UnsupportedMessage")  # again (replay): overwritten, not duplicated
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".hl7") and files[1].endswith(".json")
    assert (tmp_path / files[0]).read_bytes() == raw
    sidecar = json.loads((tmp_path / files[1]).read_text())
    assert sidecar["reason"] == "OBR-18 missing"
    assert sidecar["error_class"] == "UnsupportedMessage"
    assert sidecar["envelope_id"] == "7" and sidecar["source"] == "mllp"
    assert sidecar["headers"] == {"control_id": "C1"}
    assert "SECRET" not in (tmp_path / files[1]).read_text()
