"""Review finding: the worker can finish an inbox envelope before the inbox thread moved its file to ``.landed/``.

``FolderInbox._take`` lands (commit + notify: the worker wakes at once) and only then moves the file to
``.landed/<id>__<name>``. When the worker's ``finish`` (and so ``FolderInbox.finished``) runs in between,
``finished`` finds nothing to move and the file then stays in ``.landed/`` until the next restart. The window
is widened here by a slow rename (a busy disk); real store, real StoreSource, two threads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from engine.sources.inbox import LANDED, FolderInbox, InboxSettings
from engine.store import PUBLISHED, MessageStore, Outcome, StoreSource


class SlowRenameInbox(FolderInbox):
    def _move(self, src: Path, dst: Path) -> Path:
        if dst.parent.name == LANDED:
            time.sleep(0.5)  # the inbox thread is descheduled / the rename is slow
        return super()._move(src, dst)


def test_file_finished_while_being_moved_still_reaches_done(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "m.db")
    root = tmp_path / "in"
    inbox = SlowRenameInbox(InboxSettings(path=root, settle_seconds=0.0), store)
    store.add_listener(inbox.finished)
    source = StoreSource(store)

    def worker() -> None:  # what engine.worker does for a message with outputs
        envelopes = source.poll(10, 5.0)
        source.finish([(env, Outcome(PUBLISHED, outputs=("bundle-1",))) for env in envelopes])

    thread = threading.Thread(target=worker)
    thread.start()
    (root / "a.hl7").write_bytes(b"MSH|a")
    inbox.scan_once()
    assert inbox.scan_once() == 1
    thread.join(10)
    try:
        assert store.counts()[PUBLISHED] == 1
        assert (root / "done" / "a.hl7").exists(), f".landed holds {[p.name for p in (root / LANDED).iterdir()]}"
    finally:
        store.close()
