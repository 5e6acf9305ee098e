"""Workers write the outputs (engine.backfill.staging): input order across workers, dead letters written by the
workers, no temp file left; non-message files are one outcome; ``engine map --config`` takes the config's model."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import pytest

from engine.backfill.checkpoint import MemoryCheckpoint
from engine.backfill.formats import NOT_A_MESSAGE_FILE, iter_files
from engine.backfill.run import Options, run_backfill
from engine.backfill.staging import StagedFolder, Staging, WorkerDeadLetters, partition, publish
from engine.cli import main
from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from engine.sinks.dlq_folder import FolderDeadLetters
from tests.conftest import TESTDATA

MSG = (TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-13-v2.7-Final-20250814-22.hl7").read_bytes()
ER7 = MSG.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def _version(report: int, version: int) -> bytes:
    """Report ``report`` (its own filler order number), ``version`` (own control id, changed impression text)."""
    body = ER7.replace(b"|620943177|", f"|620943177-{report}|".encode())
    body = body.replace(b"|ORU^R01|2.25.", f"|ORU^R01|{report}.{version}.25.".encode(), 1)
    return body.replace(b"subtle", f"subtle (version {version})".encode())


def _visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("workers_write_dead_letters", [True, False])
def test_workers_publish_in_input_order_and_write_dead_letters(
    tmp_path: Path, workers_write_dead_letters: bool
) -> None:
    """Two worker processes, one frame per task (they finish in any order): every Bundle published whole, in
    input order; a rejected message's dead letter is written by a worker (or, for dead letters that are not
    files, such as Kafka, sent back and written by the parent); no temp file is left behind."""
    src = tmp_path / "src"
    src.mkdir()
    frames = [_version(r, v) for r in range(12) for v in (1, 2)]
    no_pid = b"\r".join(s for s in ER7.split(b"\r") if s and not s.startswith(b"PID")) + b"\r"
    (src / "feed.hl7").write_bytes(b"".join(frames) + no_pid.replace(b"|ORU^R01|", b"|ORU^R01|x", 1))
    out, dlq = tmp_path / "out", tmp_path / "dlq"
    ctx = load_mapping_context(None)
    factory = functools.partial(WorkerDeadLetters, dlq) if workers_write_dead_letters else None
    staging = Staging(out, sync=True, dead_letters=factory)
    options = Options(workers=2, batch=1, staging=staging)
    published: list[str] = []
    tally = run_backfill(
        list(iter_files([src])), ctx, [], FolderDeadLetters(dlq), MemoryCheckpoint(),
        options=options, handle_signals=False, published=published.append,
    )  # fmt: skip
    assert tally.inputs == 25 and tally.outputs == 24 and sum(tally.rejected.values()) == 1
    conv = Converter(ctx)
    expected = [o for raw in frames for o in conv.convert(raw).outputs]
    assert published == [o.bundle_id for o in expected]
    assert _visible(out) == {f"{o.bundle_id}.json": o.body for o in expected}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    sidecars = [json.loads(v) for k, v in _visible(dlq).items() if k.endswith(".json")]
    assert [s["error_class"] for s in sidecars] == ["InvalidReport"] and sidecars[0]["envelope_id"].endswith("#25")
    assert not [p for p in dlq.iterdir() if p.name.startswith(".")]


def test_staged_folder_publishes_the_later_version(tmp_path: Path) -> None:
    """Two staged files for one Bundle id (e.g. from two workers, the later one finished first): after the flush
    the file holds the one staged last (input order), and a discarded stage leaves nothing."""
    folder = StagedFolder(tmp_path, sync=True)
    (tmp_path / ".tmp-b.json.2.1").write_bytes(b"later")
    (tmp_path / ".tmp-b.json.1.1").write_bytes(b"earlier")
    (tmp_path / ".tmp-c.json.1.2").write_bytes(b"never")
    folder.stage("b", ".tmp-b.json.1.1")
    folder.stage("b", ".tmp-b.json.2.1")
    folder.flush()
    folder.discard([".tmp-c.json.1.2"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"] and (tmp_path / "b.json").read_bytes() == b"later"


def test_worker_renames_keep_the_last_version_across_flushes(tmp_path: Path) -> None:
    """The renames are done by the two worker processes (one part each per flush): three sends of the same
    version of 10 reports (same Bundle id, other bytes), each several flushes apart and converted by either
    worker; every file holds the report's last send and no temp file is left."""
    src = tmp_path / "src"
    src.mkdir()
    def resend(report: int, n: int) -> bytes:  # same report version (same Bundle id), other name and control id
        body = _version(report, 1).replace(b"|ORU^R01|", f"|ORU^R01|r{n}.".encode(), 1)
        return body.replace(b"KOCH^APRIL^", f"KOCH^APRIL{n}^".encode(), 1)

    frames = [resend(r, n) for n in (1, 2, 3) for r in range(10)]
    (src / "feed.hl7").write_bytes(b"".join(frames))
    out = tmp_path / "out"
    options = Options(workers=2, batch=2, flush_every=4, staging=Staging(out, sync=True))
    tally = run_backfill(
        list(iter_files([src])), load_mapping_context(None), [], FolderDeadLetters(tmp_path / "dlq"),
        MemoryCheckpoint(), options=options, handle_signals=False,
    )  # fmt: skip
    assert tally.inputs == 30 and tally.outputs == 30
    conv = Converter(load_mapping_context(None))
    last = {o.bundle_id: o.body for raw in frames for o in conv.convert(raw).outputs}
    assert len(last) == 10  # one Bundle id per report: the sends replace each other
    assert _visible(out) == {f"{bundle_id}.json": body for bundle_id, body in last.items()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_partition_keeps_every_version_of_an_id_in_one_part_in_order(tmp_path: Path) -> None:
    """Parts renamed in any order (two workers, either finishing first) give the same files as renaming the
    whole list in order."""
    staged = [(f"id{n % 7}", f".tmp-id{n % 7}.json.{n}") for n in range(60)]
    parts = partition(staged, 3)
    assert sorted(e for part in parts for e in part) == sorted(staged)
    for part in parts:
        ids = {bundle_id for bundle_id, _ in part}
        assert all(bundle_id not in ids for other in parts if other is not part for bundle_id, _ in other)
        assert part == [e for e in staged if e[0] in ids]  # the input order, within the part
    for _, tmp in staged:
        (tmp_path / tmp).write_text(tmp)
    for part in reversed(parts):
        publish(str(tmp_path), part)
    last = {f"id{n % 7}.json": f".tmp-id{n % 7}.json.{n}".encode() for n in range(60)}
    assert _visible(tmp_path) == last
    assert partition(staged, 1) == [staged] and partition([], 2) == []


def _non_message_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# Archive 2019\n\nORU feeds exported from the RIS; MSH segments inside.\n")
    junk = bytearray(random.Random(7).randbytes(300_000))
    for at in range(0, len(junk), 997):  # MLLP start/end bytes and line breaks all over: many "junk runs"
        junk[at] = 0x0B if at % 2 else 0x1C
    (folder / "blob.bin").write_bytes(bytes(junk) + b"\rMSH\r" + bytes(junk[:5000]))
    (folder / "notes-utf16.txt").write_bytes("notes about the archive\n".encode("utf-16"))


@pytest.mark.parametrize("workers", ["0", "2"])
def test_map_skips_non_message_files_with_one_outcome_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    src = tmp_path / "src"
    _non_message_files(src)
    (src / "report.hl7").write_bytes(MSG)
    out = tmp_path / "out"
    assert main(["map", "--workers", workers, "--out", str(out), str(src)]) == 0  # skipped files do not fail
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 1 and summary["bundles"] == 1 and summary["rejected"] == []
    assert sorted(Path(s["input"]).name for s in summary["skipped"]) == ["README.md", "blob.bin", "notes-utf16.txt"]
    assert {s["reason"] for s in summary["skipped"]} == {NOT_A_MESSAGE_FILE}
    assert not (out / "rejected").exists()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len([x for x in lines if x.startswith("skipped ")]) == 3 and not [x for x in lines if "rejected " in x]


def test_backfill_counts_skipped_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _non_message_files(src)
    (src / "report.hl7").write_bytes(MSG)
    root = tmp_path / "run"
    cfg = root / "engine.yaml"
    root.mkdir()
    cfg.write_text(
        f"store: {{path: {root}/store.db}}\nsources: {{inbox: {{path: {root}/inbox}}}}\n"
        f"sinks: {{folder: {{path: {root}/outbox}}}}\ndlq: {{folder: {{path: {root}/dlq}}}}\n"
    )
    report = tmp_path / "report.json"
    assert main(["backfill", "--config", str(cfg), "--workers", "0", "--report", str(report), str(src)]) == 0
    data = json.loads(report.read_text())
    assert data["skipped_files"] == {NOT_A_MESSAGE_FILE: 3} and data["files"] == 4
    assert sorted(Path(p).name for p in data["skipped_examples"]) == ["README.md", "blob.bin", "notes-utf16.txt"]
    assert data["inputs"] == 1 and data["rejected"] == {} and len(_visible(root / "outbox")) == 1
    assert not _visible(root / "dlq")


def test_map_takes_the_model_from_the_config(tmp_path: Path) -> None:
    """``--model`` wins; else the config's ``sinks.fhir.model``; else document."""
    cfg = tmp_path / "engine.yaml"
    cfg.write_text("sinks:\n  fhir:\n    base_url: http://fhir.invalid/fhir\n    model: harmonized\n")
    src = tmp_path / "a.hl7"
    src.write_bytes(MSG)
    runs = {}
    for name, extra in {
        "config": ["--config", str(cfg)],
        "explicit": ["--model", "harmonized"],
        "override": ["--config", str(cfg), "--model", "document"],
        "default": [],
    }.items():
        out = tmp_path / name
        assert main(["map", "--workers", "0", "--out", str(out), *extra, str(src)]) == 0
        runs[name] = {k: v for k, v in _visible(out).items() if k != "summary.json"}
    assert runs["config"] == runs["explicit"] and runs["override"] == runs["default"]
    assert runs["config"] != runs["default"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("sinks: {fhir: {model: nonsense}}\n")
    assert main(["map", "--config", str(bad), "--out", str(tmp_path / "bad"), str(src)]) == 2
