"""Review finding: ``failed/`` is the only copy of an inbox file that was never landed (above ``max_bytes``, or
refused for good by the landing), yet a later file with the same name (senders reuse names such as
``report.hl7``) was ``os.replace``d over it: the first file's original bytes were gone."""

from __future__ import annotations

from pathlib import Path

from engine.sources.inbox import FolderInbox, InboxSettings
from engine.store import MessageStore


def test_two_too_large_files_with_the_same_name_are_both_kept(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    root = tmp_path / "in"
    inbox = FolderInbox(InboxSettings(path=root, settle_seconds=0.0, max_bytes=10), store)
    try:
        for body in (b"MSH|first too large", b"MSH|second too large"):
            (root / "report.hl7").write_bytes(body)
            inbox.scan_once()
            inbox.scan_once()
            assert not (root / "report.hl7").exists()
        kept = sorted(p.read_bytes() for p in (root / "failed").iterdir())
        assert kept == [b"MSH|first too large", b"MSH|second too large"]
        assert store.counts()["received"] == 0
    finally:
        store.close()
