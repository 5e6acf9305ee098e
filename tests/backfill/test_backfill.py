"""``engine backfill`` end to end: outcomes, duplicates, progress, the process pool, kill and resume."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.backfill.formats import NOT_A_MESSAGE_FILE
from engine.backfill.progress import Progress, Tally
from engine.cli import main
from tests.conftest import ROOT, TESTDATA

SCOUT = TESTDATA / "hl7v2-washu-scout"
MSG = (SCOUT / "messages" / "scout-13-v2.7-Final-20250814-22.hl7").read_bytes()
ENGINE = [sys.executable, "-m", "engine"]

CONFIG = """
mapping:
  system_base: "urn:imaging-engine:sid"
  senders:
    - name: washu-scout
      sending_application: SOMERIS
      sending_facility: ABCHOSP
      accession_field: OBR-3
store: {path: var/store}
sources: {inbox: {path: var/inbox}}
sinks: {folder: {path: var/outbox}}
dlq: {folder: {path: var/dlq}}
"""


def _config(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "engine.yaml"
    cfg.write_text(CONFIG.replace("var/", f"{root}/var/"))
    return cfg


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else {}


def _no_pid(message: bytes) -> bytes:
    return b"\r".join(s for s in message.replace(b"\n", b"\r").split(b"\r") if s and not s.startswith(b"PID")) + b"\r"


def test_outcomes_and_duplicates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Converted, filtered (counted by reason, no dead letter), rejected (dead letter with the original bytes),
    and exact duplicates (same control id and bytes, in another file and inside a log) counted once."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.hl7").write_bytes(MSG)
    (src / "sub" / "copy.hl7").write_bytes(MSG)  # exact duplicate in another file
    body = MSG.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r").replace(b"\r", b"<R>\n")
    (src / "listener.log").write_bytes(b"2025-01-01 00:00:00|INFO|x|\n<SB>\n" + body + b"<R>\n<EB>\n")  # and in a log
    adt = b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|9|P|2.5\rPID|1||123^^^H^MR||DOE^J\r"
    (src / "adt.hl7").write_bytes(adt)
    (src / "nopid.hl7").write_bytes(_no_pid(MSG))
    cfg = _config(tmp_path / "run")
    report = tmp_path / "report.json"
    code = main(["backfill", "--config", str(cfg), "--workers", "0", "--report", str(report), str(src)])
    assert code == 1  # something was rejected
    data = json.loads(report.read_text())
    assert data["inputs"] == 5 and data["duplicates"] == 2 and data["converted"] == 1 and data["outputs"] == 1
    assert data["filtered"] == {"message type ADT^A01 is not ORU^R01 (only imaging result reports are converted)": 1}
    assert data["rejected"] == {"no PID segment: a report without a patient cannot be converted": 1}
    assert len(_files(tmp_path / "run/var/outbox")) == 1
    dlq = _files(tmp_path / "run/var/dlq")
    [sidecar] = [json.loads(v) for k, v in dlq.items() if k.endswith(".json")]
    assert sidecar["error_class"] == "InvalidReport" and dlq[sidecar["payload_file"]] == _no_pid(MSG)
    summary = capsys.readouterr().err
    assert "duplicates: 2" in summary and "filtered: 1" in summary and "rejected: 1 (dead letters)" in summary
    # the same command again: nothing is converted twice, the same summary
    assert main(["backfill", "--config", str(cfg), "--workers", "0", "--report", str(report), str(src)]) == 1
    again = json.loads(report.read_text())
    assert {k: again[k] for k in data if k not in ("elapsed_s", "messages_per_s")} == {
        k: data[k] for k in data if k not in ("elapsed_s", "messages_per_s")
    }


def test_progress_lines_and_bar() -> None:
    plain = io.StringIO()
    progress = Progress(1000, stream=plain, tty=False, interval=0.0)
    tally = Tally(bytes=500, inputs=10, converted=8, duplicates=1, filtered={"x": 1})
    progress.update(Tally())
    progress.update(tally)
    line = plain.getvalue().splitlines()[-1]
    assert line.startswith("backfill:  50.0% 10 msgs") and "msg/s" in line and "eta" in line and "dup=1" in line
    assert "filtered: 1" in progress.summary(tally) and "throughput:" in progress.summary(tally)
    tty = io.StringIO()
    bar = Progress(1000, stream=tty, tty=True)
    bar.update(Tally())
    bar.update(tally)
    bar.close()
    assert "backfill" in tty.getvalue() and "msg/s" in tty.getvalue() and "%" in tty.getvalue()


def _big_input(folder: Path, copies: int) -> None:
    """``copies`` versions of the 900-message bulk feed (distinct control ids), plus the listener logs."""
    folder.mkdir(parents=True)
    bulk = (SCOUT / "bulk" / "scout-all-oru.hl7").read_bytes()
    for n in range(copies):
        (folder / f"bulk-{n}.hl7").write_bytes(bulk.replace(b"|ORU^R01|", f"|ORU^R01|c{n}-".encode()))
    shutil.copytree(SCOUT / "raw-logs", folder / "logs")


def _run(cfg: Path, src: Path, report: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    """The command in a subprocess; stderr (progress lines, summary) to a file next to the report."""
    cmd = [*ENGINE, "backfill", "--config", str(cfg), "--report", str(report), "--progress-interval", "0", *extra]
    err = report.with_suffix(".err")
    with open(err, "ab") as fh:
        proc = subprocess.Popen([*cmd, str(src)], cwd=ROOT, stderr=fh, stdout=subprocess.DEVNULL)
    return proc, err


def _committed(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        try:
            row = conn.execute("SELECT COALESCE(SUM(done_upto), 0) FROM backfill_files").fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


def test_kill_and_resume_gives_identical_output(tmp_path: Path) -> None:
    """SIGKILL in the middle (2 worker processes), the same command again: the same output files, the same
    dead letters and the same counts as an uninterrupted run: no duplicate, no loss."""
    src = tmp_path / "src"
    _big_input(src, 6)  # a few commit intervals long: the workers' renames lag by the queued tasks
    ref_cfg, cfg = _config(tmp_path / "ref"), _config(tmp_path / "killed")
    proc, err_file = _run(ref_cfg, src, tmp_path / "ref.json", "--workers", "2")
    proc.wait(timeout=300)
    err = err_file.read_text()
    assert proc.returncode == 1, err[-2000:]  # the logs' junk frames are rejected
    assert "backfill:" in err and "throughput:" in err  # plain progress lines (not a TTY) and the summary

    db = tmp_path / "killed/var/store/messages.db"
    killed, _ = _run(cfg, src, tmp_path / "k.json", "--workers", "2", "--commit-interval", "0.1")
    deadline = time.monotonic() + 120
    while _committed(db) < 300 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "finished before it could be killed: make the input larger"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    at = _committed(db)  # frames whose outputs were published and committed before the kill
    assert 0 < at < json.loads((tmp_path / "ref.json").read_text())["inputs"]  # killed with work left
    assert _files(tmp_path / "killed/var/outbox")

    resumed, err_file = _run(cfg, src, tmp_path / "k.json", "--workers", "2")
    resumed.wait(timeout=300)
    assert resumed.returncode == 1, err_file.read_text()[-2000:]
    assert _files(tmp_path / "killed/var/outbox") == _files(tmp_path / "ref/var/outbox")
    dlq_names = lambda root: sorted(n for n in _files(root / "var/dlq") if not n.endswith(".json"))  # noqa: E731
    assert dlq_names(tmp_path / "killed") == dlq_names(tmp_path / "ref")
    ref, got = json.loads((tmp_path / "ref.json").read_text()), json.loads((tmp_path / "k.json").read_text())
    for key in ("files", "bytes", "inputs", "converted", "outputs", "duplicates", "filtered", "rejected"):
        assert got[key] == ref[key], key
    # listener logs' junk <SB> frames stay rejected; "Bad file" (no message start, no marker) is skipped whole
    assert ref["skipped_files"] == {NOT_A_MESSAGE_FILE: 1} == got["skipped_files"]
    assert ref["inputs"] == 6 * 900 + 69 and ref["duplicates"] >= 2


def test_map_with_two_workers_matches_in_process(tmp_path: Path) -> None:
    """The process pool gives the same files, summary and stdout order as converting in one process."""
    src = SCOUT / "messages"
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / workers
        proc = subprocess.run([*ENGINE, "map", "--workers", workers, "--out", str(out), str(src)],
                              capture_output=True, timeout=120, cwd=ROOT)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-1000:]
        outs.append(_files(out))
        stdout = subprocess.run([*ENGINE, "map", "--workers", workers, str(src)], capture_output=True, timeout=120,
                                cwd=ROOT).stdout  # fmt: skip
        outs.append({"stdout": stdout})
    assert outs[0] == outs[2] and outs[1] == outs[3] and len(outs[0]) > 20
