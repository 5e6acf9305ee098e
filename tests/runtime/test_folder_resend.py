"""A resend is not rewritten: a Bundle file (or dead letter) that already holds the new bytes is kept as it is
(same inode: no file created, none freed), still synced before ``flush`` returns; other bytes replace it.

Real files throughout; the durability calls are observed by wrapping the real ``sync_files`` / ``fsync_dir``
(they still run), since a power cut cannot be staged in a test.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.convert import Converter, Output
from engine.sinks import folder as folder_module
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sinks.folder import FolderSink, atomic_write, holds, write_batch
from engine.sources.base import CONTENT_HL7V2, Envelope
from engine.store import MessageStore, StoreSource
from engine.worker import Worker

ENV = Envelope(id="7", payload=b"MSH|x", content_type=CONTENT_HL7V2, source="mllp", received_at=1.0, headers={})


def _out(bundle_id: str, body: bytes) -> Output:
    return Output(bundle_id=bundle_id, body=body, report_id="r", partition_key=None, kind="document")


def _ino(path: Path) -> int:
    return path.stat().st_ino


class SyncCalls:
    """Records what the real ``sync_files`` and ``fsync_dir`` of the folder module are asked to make durable."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: list[list[str]] = []
        self.dirs: list[Path] = []
        real_sync, real_dir = folder_module.sync_files, folder_module.fsync_dir

        def sync_files(directory: Path, paths: Sequence[str | Path]) -> None:
            self.synced.append([os.fspath(p) for p in paths])
            real_sync(directory, paths)

        def fsync_dir(directory: Path) -> None:
            self.dirs.append(Path(directory))
            real_dir(directory)

        monkeypatch.setattr(folder_module, "sync_files", sync_files)
        monkeypatch.setattr(folder_module, "fsync_dir", fsync_dir)


def test_resend_of_identical_bytes_keeps_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FolderSink(tmp_path)
    sink.write(_out("b-1", b'{"v":1}'), ENV)
    sink.flush()
    target = tmp_path / "b-1.json"
    before = target.stat()
    calls = SyncCalls(monkeypatch)
    sink.write(_out("b-1", b'{"v":1}'), ENV)  # the same report again (resend, replay, redone batch)
    sink.flush()
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert target.read_bytes() == b'{"v":1}' and sink.kept == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-1.json"]  # no temporary file left
    # still made durable before flush returns: data (it may come from a process that crashed before its
    # sync) and the directory entry (it may have been renamed without the directory fsync)
    assert calls.synced == [[str(target)]] and calls.dirs == [tmp_path]


@pytest.mark.parametrize("corrected", [b'{"v":2}', b'{"v":22}'], ids=["same size", "other size"])
def test_corrected_report_replaces_the_file(tmp_path: Path, corrected: bytes) -> None:
    sink = FolderSink(tmp_path)
    sink.write(_out("b-1", b'{"v":1}'), ENV)
    sink.flush()
    first = _ino(tmp_path / "b-1.json")
    sink.write(_out("b-1", corrected), ENV)
    sink.flush()
    assert (tmp_path / "b-1.json").read_bytes() == corrected and sink.kept == 0
    assert _ino(tmp_path / "b-1.json") != first  # a new file renamed over the old one (atomic replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-1.json"]


def test_mixed_batch_on_the_thread_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = FolderSink(tmp_path, threads=4)
    old = {f"b-{i}": f'{{"n":{i}}}'.encode() for i in range(30)}
    for bid, body in old.items():
        sink.write(_out(bid, body), ENV)
    sink.flush()
    inodes = {bid: _ino(tmp_path / f"{bid}.json") for bid in old}
    new = dict(old)
    new.update({f"b-{i}": f'{{"n":{i + 100}}}'.encode() for i in range(0, 30, 3)})  # corrected
    new.update({f"c-{i}": b"{}" for i in range(10)})  # new Bundles
    calls = SyncCalls(monkeypatch)
    for bid, body in new.items():
        sink.write(_out(bid, body), ENV)
    sink.flush()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {f"{b}.json": v for b, v in new.items()}
    unchanged = [b for b in old if new[b] == old[b]]
    assert sink.kept == len(unchanged) == 20
    assert all(_ino(tmp_path / f"{b}.json") == inodes[b] for b in unchanged)
    assert all(_ino(tmp_path / f"{b}.json") != inodes[b] for b in old if b not in unchanged)
    [synced] = calls.synced  # one sync for the batch: the temporary files and the kept ones
    assert sorted(Path(p).name for p in synced if not Path(p).name.startswith(".tmp-")) == sorted(
        f"{b}.json" for b in unchanged
    )
    assert len(synced) == len(new) and calls.dirs == [tmp_path]


def test_holds_compares_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert not holds(path, b"abc")  # missing
    path.write_bytes(b"abc")
    assert holds(path, b"abc")
    assert not holds(path, b"abd") and not holds(path, b"ab") and not holds(path, b"abcd")
    assert not holds(tmp_path, b"")  # a directory is never "the same file"
    (tmp_path / "link").symlink_to(path)
    assert not holds(tmp_path / "link", b"abc")  # nor a symbolic link (os.replace puts a regular file there)
    path.write_bytes(b"")
    assert holds(path, b"")


def test_write_batch_failure_leaves_kept_files_and_no_temporary(tmp_path: Path) -> None:
    write_batch(tmp_path, [("a.json", b"1")])
    kept = _ino(tmp_path / "a.json")
    (tmp_path / "b.json").mkdir()  # the rename onto a directory fails
    with pytest.raises(OSError):
        write_batch(tmp_path, [("a.json", b"1"), ("b.json", b"2")])
    assert _ino(tmp_path / "a.json") == kept and (tmp_path / "a.json").read_bytes() == b"1"
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_atomic_write_keeps_identical_and_replaces_other_bytes(tmp_path: Path) -> None:
    atomic_write(tmp_path, "m.json", b"one")
    first = _ino(tmp_path / "m.json")
    atomic_write(tmp_path, "m.json", b"one")
    assert _ino(tmp_path / "m.json") == first
    atomic_write(tmp_path, "m.json", b"two")
    assert _ino(tmp_path / "m.json") != first and (tmp_path / "m.json").read_bytes() == b"two"


@pytest.mark.parametrize("deferred", [False, True], ids=["immediate", "deferred"])
def test_dead_letter_again_keeps_the_original_bytes_file(tmp_path: Path, deferred: bool) -> None:
    dlq = FolderDeadLetters(tmp_path, deferred=deferred)
    raw = b"MSH|^~\\&|A|B\rPID|1\r"
    for _ in range(2):  # dead-lettered again (replay): the same payload file, a fresh sidecar
        dlq.put(ENV, raw, "OBR-18 missing", "UnsupportedMessage")
        if deferred:
            dlq.flush()
        if _ == 0:
            [payload_file] = tmp_path.glob("*.hl7")
            first = _ino(payload_file)
    assert _ino(payload_file) == first and payload_file.read_bytes() == raw
    assert len(list(tmp_path.iterdir())) == 2


def test_worker_resend_publishes_and_keeps_one_file(tmp_path: Path, scout_messages: list[Path]) -> None:
    """A resent report (same bytes, landed twice) ends published twice with one untouched Bundle file."""
    data = next(d for d in (p.read_bytes() for p in scout_messages) if Converter().convert(d).outputs)
    store = MessageStore(tmp_path / "store" / "messages.db")
    sink = FolderSink(tmp_path / "out")
    worker = Worker(StoreSource(store), Converter(), [sink], FolderDeadLetters(tmp_path / "dlq"), poll_timeout=0.0)
    try:
        first = store.land(data, content_type=CONTENT_HL7V2, source="test", headers={})
        worker.run_once(timeout=0.0)
        [bundle] = list((tmp_path / "out").iterdir())
        inode, body = _ino(bundle), bundle.read_bytes()
        second = store.land(data, content_type=CONTENT_HL7V2, source="test", headers={})
        worker.run_once(timeout=0.0)
        assert [p.name for p in (tmp_path / "out").iterdir()] == [bundle.name]
        assert _ino(bundle) == inode and bundle.read_bytes() == body and sink.kept == 1
        for eid in (first, second):
            message = store.get(eid)
            assert message is not None and message.status == "published" and message.outputs
    finally:
        store.close()
