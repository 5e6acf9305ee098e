"""Backfill at scale: inputs made by repeating the shared data, then ``engine backfill`` measured.

    .venv/bin/python bench/bench_backfill.py [--scale 1.0] [--workdir DIR] [--skip-kill]

``--scale 1`` builds 1,000,000 ORU messages (the 900-message WashU feed repeated, each copy with its own
filler order numbers and control ids, so every report is a distinct Bundle) in files of 900 messages,
and 50,000 SR files (the shared SR samples repeated with their SOP Instance UID varied); ``--scale 0.02``
builds 20,000 and 1,000. Prints:

* in process: ORU messages and SR files per CPU-second (one core: parse + map + shape + serialize);
* the whole command on the ORU input with 1 and with 2 worker processes, alternating ``--runs`` times
  (wall clock, messages/s, ratio of the medians) and the peak RSS of the largest process;
* kill and resume: SIGKILL at ~40 % (2 workers), the same command again, then the output folder compared
  file by file with the uninterrupted 2-worker run;
* the whole command on the SR files (files/s).

Timing lives here, never in tests. The machine is shared: quote medians of several runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.backfill.formats import frames_of  # noqa: E402
from engine.cmd_map import load_mapping_context  # noqa: E402
from engine.convert import Converter  # noqa: E402

SHARED = ROOT.parent / "shared" / "testdata"
BULK = SHARED / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"
SR_DIRS = sorted(SHARED.glob("dicom-sr-*"))
ENGINE = [sys.executable, "-m", "engine"]

CONFIG = """
mapping:
  system_base: "urn:imaging-engine:sid"
  senders:
    - name: washu-scout
      sending_application: SOMERIS
      sending_facility: ABCHOSP
      accession_field: OBR-3
      accession_system: "urn:imaging-engine:sid/ABCHOSP/accession"
  default: {accession_field: OBR-18}
store: {path: STORE}
sources: {inbox: {path: INBOX}}
sinks: {folder: {path: OUTBOX}}
dlq: {folder: {path: DLQ}}
"""

_FIELD3 = re.compile(rb"(\r(?:ORC|OBR)\|[^|\r]*\|[^|\r]*\|)([^|^\r]*)")


def build_oru(folder: Path, count: int) -> int:
    """``count`` messages in files of 900 (the feed, copy n with "-n" appended to ORC-3/OBR-3 and MSH-10)."""
    folder.mkdir(parents=True, exist_ok=True)
    feed = BULK.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    messages = [b"MSH" + m for m in feed.split(b"MSH")[1:]]
    written, copy = 0, 0
    while written < count:
        tag = f"-{copy}".encode()
        take = messages[: count - written]
        body = b"".join(m.replace(b"|ORU^R01|", b"|ORU^R01|" + tag[1:] + b".", 1) for m in take)
        body = _FIELD3.sub(lambda m, tag=tag: m.group(1) + m.group(2) + (tag if m.group(2) else b""), body)
        (folder / f"feed-{copy:05d}.hl7").write_bytes(body)
        written += len(take)
        copy += 1
    return written


def build_sr(folder: Path, count: int) -> int:
    """``count`` SR files: the shared samples (those that convert) with the last digits of the SOP Instance
    UID varied per copy (same length, so the DICOM encoding stays valid)."""
    import pydicom

    folder.mkdir(parents=True, exist_ok=True)
    conv = Converter(load_mapping_context(None))
    samples: list[tuple[bytes, bytes]] = []
    for d in SR_DIRS:
        for path in sorted(d.rglob("*.dcm")):
            data = path.read_bytes()
            if not conv.convert(data).outputs:
                continue
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID).encode()
            if len(uid.rsplit(b".", 1)[-1]) > 7:
                samples.append((data, uid))
    for n in range(count):
        data, uid = samples[n % len(samples)]
        new = uid[:-6] + f"{n // len(samples):06d}".encode()
        (folder / f"sr-{n:06d}.dcm").write_bytes(data.replace(uid, new))
    return count


def per_core(oru: Path, sr: Path) -> None:
    conv = Converter(load_mapping_context(None))
    frames = [f.raw for f in frames_of(next(iter(sorted(oru.iterdir()))), 1 << 24)][:900]
    for raw in frames[:200]:
        conv.convert(raw)
    t = time.process_time()
    for raw in frames:
        conv.convert(raw)
    cpu = time.process_time() - t
    print(f"in process, ORU: {len(frames) / cpu:,.0f} messages per CPU-second ({cpu / len(frames) * 1e6:,.0f} us each)")
    files = [p.read_bytes() for p in sorted(sr.iterdir())[:200]]
    for data in files[:20]:
        conv.convert(data)
    t = time.process_time()
    for data in files:
        conv.convert(data)
    cpu = time.process_time() - t
    print(f"in process, SR: {len(files) / cpu:,.0f} files per CPU-second")


def config(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text = CONFIG
    for key in ("STORE", "INBOX", "OUTBOX", "DLQ"):
        text = text.replace(key, str(root / key.lower()))
    path = root / "engine.yaml"
    path.write_text(text)
    return path


def backfill(cfg: Path, src: Path, workers: int, report: Path) -> tuple[float, subprocess.Popen[bytes]]:
    cmd = [*ENGINE, "backfill", "--config", str(cfg), "--workers", str(workers), "--report", str(report), str(src)]
    with open(report.with_suffix(".err"), "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    return time.perf_counter(), proc


def whole(cfg: Path, src: Path, workers: int, label: str) -> dict[str, object]:
    report = cfg.parent / f"{label}.json"
    t0, proc = backfill(cfg, src, workers, report)
    proc.wait()
    elapsed = time.perf_counter() - t0
    data: dict[str, object] = json.loads(report.read_text())
    rate = int(data["inputs"]) / elapsed  # type: ignore[call-overload]
    print(f"engine backfill {label}: {data['inputs']:,} inputs in {elapsed:,.1f} s = {rate:,.0f} per s (wall clock)")
    data["wall_s"] = elapsed
    return data


def digest_folder(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest() for p in folder.iterdir()
            if not p.name.startswith(".")}  # fmt: skip


def committed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COALESCE(SUM(done_upto), 0) FROM backfill_files").fetchone()[0])
    except sqlite3.Error:
        return 0


def kill_and_resume(work: Path, src: Path, total: int, reference: Path) -> None:
    cfg = config(work / "killed")
    t0, proc = backfill(cfg, src, 2, work / "killed" / "k.json")
    db = work / "killed" / "store" / "messages.db"
    while proc.poll() is None and committed(db) < total * 0.4:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at = committed(db)
    _, proc = backfill(cfg, src, 2, work / "killed" / "k.json")
    proc.wait()
    same = digest_folder(work / "killed" / "outbox") == digest_folder(reference)
    print(f"kill and resume: SIGKILL after {at:,} committed messages ({time.perf_counter() - t0:,.1f} s in all); "
          f"output identical to the uninterrupted run: {same}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="alternating 1- and 2-worker runs (medians)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    n_oru, n_sr = int(1_000_000 * args.scale), int(50_000 * args.scale)
    t = time.perf_counter()
    build_oru(work / "in-oru", n_oru)
    build_sr(work / "in-sr", n_sr)
    print(f"inputs: {n_oru:,} ORU messages, {n_sr:,} SR files in {work} (built in {time.perf_counter() - t:,.0f} s)")
    per_core(work / "in-oru", work / "in-sr")
    walls: dict[int, list[float]] = {1: [], 2: []}
    for run in range(args.runs):  # alternate, so that both see the same background load
        for workers in (1, 2):
            root = work / f"w{workers}" if run == 0 else work / f"w{workers}-{run}"
            label = f"{workers} worker{'s' if workers > 1 else ''} (run {run + 1})"
            walls[workers].append(float(whole(config(root), work / "in-oru", workers, label)["wall_s"]))  # type: ignore[arg-type]
            if run:
                shutil.rmtree(root, ignore_errors=True)
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"median wall clock: 1 worker {n_oru / one:,.0f} msg/s, 2 workers {n_oru / two:,.0f} msg/s: "
          f"{one / two:.2f}x")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of the largest process: {peak:,.0f} MiB")
    if not args.skip_kill:
        kill_and_resume(work, work / "in-oru", n_oru, work / "w2" / "outbox")
    whole(config(work / "sr"), work / "in-sr", os.cpu_count() or 1, "SR files, all cores")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
