"""Backfill at scale: inputs made by repeating the shared data, then ``engine backfill`` measured.

    .venv/bin/python bench/bench_backfill.py [--scale 1.0] [--workdir DIR] [--keep] [--runs N] [--skip-kill]

``--scale 1`` builds 1,000,000 ORU messages (the 900-message WashU feed repeated, each copy with its own
filler order numbers and control ids, so every report is a distinct Bundle) in files of 900 messages,
and 50,000 SR files (the shared SR samples repeated with their SOP Instance UID varied); ``--scale 0.02``
builds 20,000 and 1,000. Prints:

* in process: ORU messages and SR files per CPU-second (one core: parse + map + shape + serialize);
* the whole command on the ORU input with 1 and with 2 conversion processes (``--workers 1`` / ``2``: the
  command's own process reads, checks duplicates, publishes and commits in both), alternating ``--runs``
  times (wall clock, messages/s, ratio of the medians), CPU seconds of the parent and of the workers, and
  the peak RSS of the largest process and of all processes together (sampled from ``/proc``);
* the time of the whole backfill on all cores (2 workers) against the 10-minute target;
* kill and resume: SIGKILL (2 workers) at ``--kill-at`` fractions of the checkpoint (plus a random delay),
  the same command again each time, then output files, dead letters and counts compared with the
  uninterrupted 2-worker run;
* the whole command on the SR files (files/s).

Inputs already in ``--workdir`` are reused; everything generated is deleted at the end unless ``--keep``.
Outputs of one run are never deleted before the next run: on a file system that avoids reusing recently
freed inodes (ext4 without a journal, as on this VM: ``find_inode_bit`` skips inodes freed in the last
60-360 s), every file created after a mass delete scans past the freed inodes, and the next run would pay
up to ~1 ms of system CPU per Bundle file (measured: 33 us per 18 KB file normally, 250-320 us for a minute
after deleting 6,000 files).

Timing lives here, never in tests. The machine is shared: quote medians of several runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the forkserver and its worker processes included)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


class Sampler:
    """Samples the process tree every ``interval`` s: peak RSS of the largest process, peak of the sum, and
    CPU seconds per process (last sample; the parent's own, and the rest)."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.max_one = self.max_sum = 0
        self.cpu: dict[int, float] = {}
        self.main_thread = 0.0  # the parent's main thread (reading, keys, claims, consuming); the rest of the
        # parent's CPU is its flush thread (syncfs, renames, checkpoint commits) and the pool's threads

    def sample(self, root: int) -> None:
        total = 0
        for pid in _tree(root):
            try:
                with open(f"/proc/{pid}/status") as fh:
                    rss = next((int(x.split()[1]) for x in fh if x.startswith("VmRSS:")), 0) * 1024
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                self.cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK
            except (OSError, IndexError, ValueError):
                continue
            total += rss
            self.max_one = max(self.max_one, rss)
        self.max_sum = max(self.max_sum, total)
        try:
            with open(f"/proc/{root}/task/{root}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            self.main_thread = (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, IndexError, ValueError):
            pass

    def watch(self, proc: subprocess.Popen[bytes], until: Any = None) -> None:
        while proc.poll() is None and (until is None or not until()):
            self.sample(proc.pid)
            time.sleep(self.interval)


def machine_cpu() -> tuple[float, float, float]:
    """Seconds of CPU the whole machine spent so far: (busy: user, nice, system, irq, softirq, steal; idle and
    iowait; steal alone: time the hypervisor gave this VM's CPUs to others), from the first line of
    ``/proc/stat``."""
    with open("/proc/stat") as fh:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fh.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK, (idle + iowait) / _TICK, steal / _TICK


def whole(cfg: Path, src: Path, workers: int, label: str) -> dict[str, Any]:
    report = cfg.parent / "report.json"
    busy0, idle0, steal0 = machine_cpu()
    t0, proc = backfill(cfg, src, workers, report)
    sampler = Sampler()
    sampler.watch(proc)
    elapsed = time.perf_counter() - t0
    busy1, idle1, steal1 = machine_cpu()
    data: dict[str, Any] = json.loads(report.read_text())
    rate = int(data["inputs"]) / elapsed
    parent = sampler.cpu.get(proc.pid, 0.0)
    others = sum(sampler.cpu.values()) - parent
    per = 1e6 / max(1, int(data["inputs"]))  # CPU per message: robust to the neighbours' load, unlike the wall clock
    print(
        f"engine backfill {label}: {data['inputs']:,} inputs in {elapsed:,.1f} s = {rate:,.0f} per s (wall clock); "
        f"CPU s: parent {parent:,.1f}, workers {others:,.1f} (per message: parent {parent * per:,.0f} us = main "
        f"thread {sampler.main_thread * per:,.0f} + other threads {(parent - sampler.main_thread) * per:,.0f}, "
        f"workers {others * per:,.0f} us); load average {os.getloadavg()[0]:.1f}; peak RSS: largest process "
        f"{sampler.max_one / 2**20:,.0f} MiB, all processes {sampler.max_sum / 2**20:,.0f} MiB; "
        f"skipped files {sum(data.get('skipped_files', {}).values())}, rejected {sum(data['rejected'].values())}; "
        f"whole machine per message (every process and kernel thread, /proc/stat): busy {(busy1 - busy0) * per:,.0f} "
        f"us (of which steal {(steal1 - steal0) * per:,.0f} us: the hypervisor's), "
        f"idle {(idle1 - idle0) * per:,.0f} us",
        flush=True,
    )
    data.update(wall_s=elapsed, rss_one=sampler.max_one, rss_sum=sampler.max_sum, report=str(report))
    data.update(
        cpu_parent_us=parent * per,
        cpu_workers_us=others * per,
        machine_busy_us=(busy1 - busy0) * per,
        steal_us=(steal1 - steal0) * per,
    )
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


def kill_and_resume(work: Path, src: Path, total: int, reference: Path, points: list[float]) -> None:
    """SIGKILL (2 workers) when the checkpoint passes each fraction of ``points``, re-run, at last run to the
    end; then compare outputs, dead letters and counts with the uninterrupted 2-worker run."""
    cfg = config(work / "killed")
    report = work / "killed" / "k.json"
    db = work / "killed" / "store" / "messages.db"
    t0 = time.perf_counter()
    kills = []
    for point in points:
        _, proc = backfill(cfg, src, 2, report)
        while proc.poll() is None and committed(db) < total * point:
            time.sleep(0.1)
        time.sleep(random.uniform(0, 1))  # anywhere between two commits
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(committed(db))
    _, proc = backfill(cfg, src, 2, report)
    proc.wait()
    same = digest_folder(work / "killed" / "outbox") == digest_folder(reference)
    dlq_same = sorted(digest_folder(work / "killed" / "dlq")) == sorted(digest_folder(reference.parent / "dlq"))
    got, ref = json.loads(report.read_text()), json.loads((reference.parent / "report.json").read_text())
    keys = ("files", "bytes", "inputs", "converted", "outputs", "duplicates", "filtered", "rejected", "skipped_files")
    counts_same = all(got.get(k) == ref.get(k) for k in keys)
    leftovers = [p.name for p in (work / "killed" / "outbox").iterdir() if p.name.startswith(".")]
    print(
        f"kill and resume: SIGKILL at {', '.join(f'{k:,}' for k in kills)} committed messages, then the same "
        f"command to the end ({time.perf_counter() - t0:,.1f} s in all); output files identical to the "
        f"uninterrupted run: {same}; dead-letter names identical: {dlq_same}; counts identical: {counts_same}; "
        f"temp files left: {len(leftovers)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory (deleted at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs and outputs")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--kill-at", default="0.3,0.7", help="checkpoint fractions at which to SIGKILL")
    parser.add_argument("--runs", type=int, default=1, help="alternating 1- and 2-worker runs (medians)")
    parser.add_argument(
        "--single", action="store_true",
        help="also run --workers 0 (the whole command in one process) in each round of the comparison",
    )  # fmt: skip
    parser.add_argument(
        "--compare-scale", type=float, default=0.0,
        help="run the 1-vs-2-worker comparison on the first files only (e.g. 0.1 = 100,000 messages)",
    )  # fmt: skip
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    n_oru, n_sr = int(1_000_000 * args.scale), int(50_000 * args.scale)
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)
    t = time.perf_counter()
    if not (work / "in-oru").is_dir():
        build_oru(work / "in-oru", n_oru)
    if not (work / "in-sr").is_dir():
        build_sr(work / "in-sr", n_sr)
    print(f"inputs: {n_oru:,} ORU messages, {n_sr:,} SR files in {work} (built in {time.perf_counter() - t:,.0f} s)")
    per_core(work / "in-oru", work / "in-sr")
    cmp_src, n_cmp = work / "in-oru", n_oru
    if args.compare_scale and args.compare_scale < args.scale:  # the 1-vs-2 comparison on the first files
        cmp_src = work / "in-oru-compare"
        shutil.rmtree(cmp_src, ignore_errors=True)
        cmp_src.mkdir()
        n_cmp = int(1_000_000 * args.compare_scale)
        for path in sorted((work / "in-oru").iterdir())[: -(-n_cmp // 900)]:
            (cmp_src / path.name).symlink_to(path)
        n_cmp = min(n_oru, -(-n_cmp // 900) * 900)
    results: dict[int, list[dict[str, Any]]] = {0: [], 1: [], 2: []}
    done_dirs: list[Path] = []  # outputs of the runs, deleted at the very end (module docstring)
    for run in range(args.runs):  # alternate, so that both see the same background load
        for workers in (0, 1, 2) if args.single else (1, 2):
            root = work / f"cmp-w{workers}-{run}"
            label = f"{workers} worker{'s' if workers != 1 else ''} (run {run + 1})"
            results[workers].append(whole(config(root), cmp_src, workers, label))
            done_dirs.append(root)
    one = statistics.median(r["wall_s"] for r in results[1])
    two = statistics.median(r["wall_s"] for r in results[2])
    print(
        f"whole command on {n_cmp:,} messages, median wall clock over {args.runs} alternating run(s), 1 conversion "
        f"process besides the parent vs 2: 1 worker {n_cmp / one:,.0f} msg/s ({one:,.1f} s), 2 workers "
        f"{n_cmp / two:,.0f} msg/s ({two:,.1f} s): {one / two:.2f}x (target >= 1.8x)",
        flush=True,
    )
    if results[0]:
        single = statistics.median(r["wall_s"] for r in results[0])
        print(
            f"one process doing everything (--workers 0: read, convert, write, publish, commit) {n_cmp / single:,.0f} "
            f"msg/s ({single:,.1f} s) vs 2 workers: {single / two:.2f}x",
            flush=True,
        )
    cpu_p = statistics.median(r["cpu_parent_us"] for r in results[2])
    cpu_w = statistics.median(r["cpu_workers_us"] for r in [*results[1], *results[2]])
    print(
        f"CPU per message (medians): parent {cpu_p:,.0f} us (2 workers), workers {cpu_w:,.0f} us: on 2 idle cores "
        f"2 workers can reach at most 2 x {cpu_w:,.0f} / ({cpu_w:,.0f} + {cpu_p:,.0f}) = "
        f"{2 * cpu_w / (cpu_w + cpu_p):.2f}x one worker (less the kernel's writeback)",
        flush=True,
    )
    busy = statistics.median(r["machine_busy_us"] for r in results[2])
    steal = statistics.median(r["steal_us"] for r in results[2])
    cores = os.cpu_count() or 1
    print(
        f"whole machine busy per message with 2 workers (median): {busy:,.0f} us (steal {steal:,.0f} us): {cores} "
        f"cores can give at most {cores * 1e6 / busy:,.0f} msg/s = {cores * 1e6 / busy * one / n_cmp:.2f}x the "
        f"1-worker rate, whatever the split between parent and workers",
        flush=True,
    )
    full = whole(config(work / "w2"), work / "in-oru", 2, "all cores = 2 workers, the whole input")
    every = [*results[1], *results[2], full]
    rss_one = max(r["rss_one"] for r in every) / 2**20
    rss_sum = max(r["rss_sum"] for r in every) / 2**20
    print(f"peak RSS: largest process {rss_one:,.0f} MiB, all processes together {rss_sum:,.0f} MiB (target < 300 MB)")
    wall = full["wall_s"]
    print(f"{n_oru:,}-message backfill on all cores (2 workers): {wall:,.1f} s = {wall / 60:,.1f} min "
          f"(target < 10 min)", flush=True)  # fmt: skip
    if not args.skip_kill:
        points = [float(x) for x in args.kill_at.split(",")]
        kill_and_resume(work, work / "in-oru", n_oru, work / "w2" / "outbox", points)
    whole(config(work / "sr"), work / "in-sr", os.cpu_count() or 1, "SR files, all cores")
    for root in [*done_dirs, work / "w2", work / "killed", work / "sr"]:  # only now: see the module docstring
        shutil.rmtree(root, ignore_errors=True)
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
