"""The backfill parent's lean paths: duplicate-key claims (insert first, read back only on a conflict),
publication of staged files in input order, the ER7 framing fast path, message keys, and the checkpoint
watermarks of files that span several tasks."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from engine.backfill import formats
from engine.backfill.checkpoint import MemoryCheckpoint, SqliteCheckpoint
from engine.backfill.formats import InputFile, frames_of, iter_files, message_key
from engine.backfill.run import Options, run_backfill
from engine.backfill.staging import StagedFolder, Staging, publish
from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from engine.sinks.dlq_folder import FolderDeadLetters
from tests.conftest import TESTDATA

MSG = (TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-13-v2.7-Final-20250814-22.hl7").read_bytes()
ER7 = MSG.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r"


def _msg(n: int) -> bytes:
    """A distinct report (own control id and filler order number)."""
    body = ER7.replace(b"|620943177|", f"|620943177-{n}|".encode())
    return body.replace(b"|ORU^R01|", f"|ORU^R01|{n}.".encode(), 1)


def _key(n: int) -> bytes:
    return hashlib.blake2b(str(n).encode(), digest_size=16).digest()


@pytest.mark.parametrize("merge_every", [1 << 16, 1])
def test_claims_detect_duplicates_and_survive_a_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, merge_every: int
) -> None:
    """New keys: None. A key seen before (in the batch, in an earlier batch, in an earlier run): the first unit.
    The same unit claiming its key again (a resumed run re-reads frames whose claims were committed): None.
    Claims that were never committed (a kill) are gone after the reopen. The same whether the keys are still
    in the recent list or were merged into the index at a commit (``merge_every=1``: at every commit)."""
    monkeypatch.setattr(SqliteCheckpoint, "MERGE_EVERY", merge_every)
    db, job = tmp_path / "c.db", "job"
    cp = SqliteCheckpoint(db, job, [tmp_path])
    assert cp.claim([(_key(1), "a#1"), (_key(2), "a#2"), (_key(1), "a#3")]) == [None, None, "a#1"]
    assert cp.claim([(_key(3), "a#4"), (_key(2), "b#1")]) == [None, "a#2"]
    assert cp.claim([(_key(1), "a#1")]) == [None]
    cp.commit([], {"inputs": 4})
    cp.close()

    cp = SqliteCheckpoint(db, job, [tmp_path])
    assert cp.claim([(_key(2), "a#2"), (_key(4), "b#2")]) == [None, None]
    assert cp.claim([(_key(3), "c#1"), (_key(5), "c#2")]) == ["a#4", None]
    cp.conn.close()  # killed: no commit since the last one

    cp = SqliteCheckpoint(db, job, [tmp_path])
    assert cp.claim([(_key(4), "d#1"), (_key(5), "d#2"), (_key(1), "d#3")]) == [None, None, "a#1"]
    assert SqliteCheckpoint(tmp_path / "o.db", "job2", [tmp_path]).claim([(_key(1), "x#1")]) == [None]
    cp.commit([], {"inputs": 9})
    merged = cp.conn.execute("SELECT COUNT(*) FROM backfill_seen WHERE job=?", (job,)).fetchone()[0]
    recent = cp.conn.execute("SELECT COUNT(*) FROM backfill_seen_recent WHERE job=?", (job,)).fetchone()[0]
    assert (merged, recent) == ((5, 0) if merge_every == 1 else (0, 5))
    cp.close()
    other = SqliteCheckpoint(db, "job2", [tmp_path])  # another job in the same store sees none of these keys
    assert other.claim([(_key(1), "x#1"), (_key(4), "x#2")]) == [None, None]
    other.close()


def test_staged_folder_publishes_everything_staged_in_input_order(tmp_path: Path) -> None:
    """``stage_all`` (a task's outputs at once) and ``stage`` keep input order: the version staged last of a
    Bundle id is the file that stays; nothing is visible before the flush; ``publish`` renames in list order."""
    names = (".tmp-b.json.2.1", ".tmp-b.json.1.1", ".tmp-c.json.1.2", ".tmp-d.json.1.3", ".tmp-d.json.2.2")
    seen: list[str] = []
    folder = StagedFolder(tmp_path, sync=True, on_publish=seen.append)  # removes stale temp files: first
    for tmp in names:
        (tmp_path / tmp).write_bytes(tmp.encode())
    folder.stage_all([("b", ".tmp-b.json.2.1"), ("c", ".tmp-c.json.1.2")])
    folder.stage("b", ".tmp-b.json.1.1")
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    folder.flush()
    assert publish(str(tmp_path), [("d", ".tmp-d.json.2.2"), ("d", ".tmp-d.json.1.3")]) == 2
    published = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert published == {"b.json": b".tmp-b.json.1.1", "c.json": b".tmp-c.json.1.2", "d.json": b".tmp-d.json.1.3"}
    assert seen == ["b", "c", "b"]


@pytest.mark.parametrize("block", [5, 64, 1 << 20])
def test_er7_frames_with_and_without_a_leading_msh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Frames that start right at MSH (the fast path) and first frames with a BOM or a batch
    header in front (checked as before) split the same way at any block size, and each converts."""
    m1, m2, m3 = _msg(1), _msg(2).replace(b"\r", b"\r\n"), _msg(3)
    plain, batch = tmp_path / "plain.hl7", tmp_path / "batch.hl7"
    plain.write_bytes(b"\xef\xbb\xbf" + m1 + m2 + b"\r\n\r\n" + m3)
    batch.write_bytes(b"FHS|^~\\&|A\rBHS|^~\\&|A\r" + m1 + m2 + b"BTS|2\rFTS|1\r")
    monkeypatch.setattr(formats, "BLOCK", block)
    frames = [f.raw for path in (plain, batch) for f in frames_of(path, 1 << 24)]
    assert frames == [
        b"\xef\xbb\xbf" + m1,
        m2 + b"\r\n\r\n",
        m3,
        b"FHS|^~\\&|A\rBHS|^~\\&|A\r" + m1,
        m2 + b"BTS|2\rFTS|1\r",
    ]
    conv = Converter()
    assert [len(conv.convert(raw).outputs) for raw in frames] == [1, 1, 1, 1, 1]


def test_message_key_ignores_segment_end_spelling_and_text_with_angle_brackets() -> None:
    """CR, LF, CRLF and logged ``<R>`` segment ends give one key; a ``<`` in the text changes nothing; other
    bytes give another key."""
    text = _msg(5).replace(b"subtle", b"subtle, <5 mm")
    assert text != _msg(5)
    logged = b"<SB>\n" + text.replace(b"\r", b"<R>\n") + b"<EB><R>\n"
    variants = [text, text.replace(b"\r", b"\n"), text.replace(b"\r", b"\r\n"), logged, b"\x0b" + text + b"\x1c\r"]
    assert len({message_key(v) for v in variants}) == 1
    assert message_key(_msg(5)) != message_key(text)


class _Recording(MemoryCheckpoint):
    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[str, int, bool]] = []

    def commit(self, files: Iterable[tuple[InputFile, int, bool]], counts: dict[str, Any]) -> None:
        self.marks.extend((f.path.name, upto, done) for f, upto, done in files)


def test_watermarks_of_files_that_span_tasks(tmp_path: Path) -> None:
    """Tasks of 3 frames over files of 5 and 4 frames, a commit after every task: each file's watermark only
    grows, marks the file finished exactly at its last frame, and a duplicate frame moves it too."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.hl7").write_bytes(b"".join(_msg(n) for n in range(5)))
    (src / "b.hl7").write_bytes(b"".join(_msg(n) for n in (10, 11, 12, 0)))  # the last one: a duplicate
    checkpoint = _Recording()
    options = Options(workers=0, batch=3, flush_every=1, staging=Staging(tmp_path / "out", sync=False))
    tally = run_backfill(
        list(iter_files([src])), load_mapping_context(None), [], FolderDeadLetters(tmp_path / "dlq"), checkpoint,
        options=options, handle_signals=False,
    )  # fmt: skip
    assert (tally.inputs, tally.outputs, tally.duplicates, tally.files) == (9, 8, 1, 2)
    for name, frames in (("a.hl7", 5), ("b.hl7", 4)):
        marks = [(upto, done) for n, upto, done in checkpoint.marks if n == name]
        assert [u for u, _ in marks] == sorted(u for u, _ in marks) and marks[-1] == (frames, True)
        assert [done for _, done in marks].count(True) == 1
    assert len(list((tmp_path / "out").iterdir())) == 8


@pytest.mark.parametrize("merge_every", [1 << 16, 3])
def test_duplicates_across_runs_with_and_without_merges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, merge_every: int
) -> None:
    """A job run over two files, then continued with a third: duplicates inside a file, across files and across
    the two runs are counted once each and converted once, whether their keys were merged into the index
    (a merge at every commit) or are still in the recent list."""
    monkeypatch.setattr(SqliteCheckpoint, "MERGE_EVERY", merge_every)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.hl7").write_bytes(b"".join(_msg(n) for n in (1, 2, 3, 2, 4)))  # 2 again
    (src / "b.hl7").write_bytes(b"".join(_msg(n) for n in (5, 1, 6)))  # 1 again
    (src / "c.hl7").write_bytes(b"".join(_msg(n) for n in (6, 7, 3, 8)))  # 6 and 3 again
    options = Options(workers=0, batch=2, flush_every=1, staging=Staging(tmp_path / "out", sync=True))
    ctx, db = load_mapping_context(None), tmp_path / "store.db"

    def run(names: list[str]) -> tuple[int, int, int]:
        checkpoint = SqliteCheckpoint(db, "job", [src])
        try:
            tally = run_backfill(
                list(iter_files([src / n for n in names])), ctx, [], FolderDeadLetters(tmp_path / "dlq"),
                checkpoint, options=options, handle_signals=False,
            )  # fmt: skip
        finally:
            checkpoint.close()
        return tally.inputs, tally.outputs, tally.duplicates

    assert run(["a.hl7", "b.hl7"]) == (8, 6, 2)
    assert run(["a.hl7", "b.hl7", "c.hl7"]) == (12, 8, 4)  # cumulative: the first run's counts carried on
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{o.bundle_id}.json" for n in range(1, 9) for o in Converter(ctx).convert(_msg(n)).outputs
    )
    with sqlite3.connect(db) as conn:
        merged = conn.execute("SELECT COUNT(*) FROM backfill_seen WHERE job='job'").fetchone()[0]
    assert (merged > 0) == (merge_every == 3)
