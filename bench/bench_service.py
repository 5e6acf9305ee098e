"""The service end to end: MLLP in on several connections -> message store -> worker -> Bundle durable in the
outbox; ACK latency while the worker runs; and the landing-time partition key (Kafka path).

    .venv/bin/python bench/bench_service.py [--copies 3] [--connections 4] [--processes 1]
        [--ack converted|stored|converted,stored] [--runs N] [--workdir DIR] [--keep] [--resend] [--profile FILE]
        [--bootstrap HOST:PORT [--kafka-only] [--threads 4] [--linger-ms N]]

Starts ``engine run`` (a real subprocess: MLLP listener with ``--ack`` (default ``converted``), SQLite store,
worker with ``--processes`` conversion processes, folder sink and dead letters with one sync per batch) on free
loopback ports, sends the 900-message WashU feed ``--copies`` times (distinct control ids and filler numbers;
with ``--resend`` the same messages each time: every copy after the first resends the same reports) over
``--connections`` persistent connections (send, wait for the ACK, next), and measures:

* ACK rate and ACK latency median / p99 while the worker converts;
* end to end: messages per second from the first send until every message is finished in the store
  (``published``/``filtered``/``failed``: each Bundle renamed into the outbox and synced);
* the engine's CPU per message (user + system, the engine and its conversion processes, from /proc);
  ``BENCH_THREADS=1`` prints it per thread, ``BENCH_THREADS=tid`` names each thread (needs ``py-spy``),
  ``BENCH_SYS=1`` splits user and system CPU;
* ``partition_key_for`` (the Kafka landing key, read from MSH/OBR alone) per CPU-second, against a full
  conversion per message (what the landing did before);
* with ``--bootstrap``: Kafka landing rate (``KafkaLanding.land``, ``acks=all``, ``--threads`` concurrent
  landers, each waiting for its own delivery) to that broker, and its CPU per message. A broker:
  ``.venv/bin/python tests/kafka_broker.py run`` (the tests' single-node Apache Kafka; prints its address).

``--runs N`` makes N rounds, each ``--ack`` mode once per round (alternating, so that the modes share the
background load), and prints the medians per mode. **Every run's folders (outbox, store, inputs) stay until the
last run has finished** (in ``--workdir``, default a new directory under ``TMPDIR``; ``--keep`` leaves them for
you to delete): this VM's root file system is ext4 without a journal, where the inode allocator
(``fs/ext4/ialloc.c``: ``find_inode_bit`` -> ``recently_deleted``) skips, checking each one, every inode freed in
the last 60 s (360 s while its inode-table block is dirty). After a mass delete every file creation in that
block group costs up to ~1 ms of system CPU instead of ~35 µs (measured: 18 KB files 35-57 µs each, ~500 µs
right after deleting 6,000 files), so a run that deleted its folders at its end (``TemporaryDirectory``, as this
bench did) slowed the Bundle files of the next run, and alternating runs measured each other's clean-up.
Separate invocations still do: run them 6 minutes apart, or use ``--runs``. Each run starts with a probe
(200 files of 18 KB created in a new directory next to the outbox; "file creation" µs of system CPU per file)
that shows the state the run met.

``--profile FILE`` runs the engine under ``py-spy record`` (collapsed stacks per thread; ``BENCH_PYSPY_ARGS=--gil``
for only the threads holding the GIL; ``.venv/bin/pip install py-spy`` first). The folders follow ``TMPDIR`` or
``--workdir``: the probe tells what creating a file costs there at the time of each run.

Timing lives here, never in tests. The machine is shared: quote medians of several runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_backfill import build_oru  # noqa: E402
from bench_mllp import load_messages, sender  # noqa: E402

from engine.backfill.formats import frames_of  # noqa: E402
from engine.cmd_map import load_mapping_context  # noqa: E402
from engine.convert import Converter, partition_key_for  # noqa: E402

CONFIG = """
mapping:
  system_base: "urn:imaging-engine:sid"
  senders:
    - {sending_application: SOMERIS, sending_facility: ABCHOSP, accession_field: OBR-3,
       accession_system: "urn:imaging-engine:sid/ABCHOSP/accession"}
  default: {accession_field: OBR-18}
store: {path: ROOT/store}
sources: {mllp: {host: 127.0.0.1, port: MLLP, ack: ACKMODE}}
sinks: {folder: {path: ROOT/outbox}}
dlq: {folder: {path: ROOT/dlq}}
worker: {batch_size: 200, processes: PROCESSES}
health: {host: 127.0.0.1, port: HEALTH}
logging: {level: WARNING}
"""


# py-spy next to this interpreter (a venv not on PATH), else on PATH
PYSPY = str(Path(sys.executable).parent / "py-spy") if (Path(sys.executable).parent / "py-spy").exists() else "py-spy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def finished(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT COUNT(*) FROM messages WHERE status IN ('published','filtered','failed')")
            return int(row.fetchone()[0])
    except sqlite3.Error:
        return 0


def cpu_by_thread(pid: int) -> dict[str, float]:
    """User + system CPU seconds per thread name of ``pid`` and its live descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                head, tail = (task / "stat").read_text().rsplit(")", 1)
                fields = tail.split()
                name = f"{'engine' if p == pid else 'child'}:{head.split('(', 1)[1].rstrip('0123456789_-')}"
                if os.environ.get("BENCH_THREADS") == "tid":
                    name += f":{task.name}"
                if os.environ.get("BENCH_SYS"):  # user and system CPU apart (system: syscalls, fsync, pipes)
                    out[name + " sys"] = out.get(name + " sys", 0.0) + int(fields[12]) / tick
                    out[name] = out.get(name, 0.0) + int(fields[11]) / tick
                else:
                    out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (Linux /proc; 0 where unreadable)."""
    return sum(cpu_by_thread(pid).values())


def creation_probe(folder: Path, count: int = 200, size: int = 18_000) -> float:
    """System CPU µs to create and write one ``size``-byte file in ``folder`` (a new directory; the files stay
    until every run is done, see the module docstring): the file system's state at the start of a run."""
    folder.mkdir(parents=True)
    data = b"x" * size
    t0 = resource.getrusage(resource.RUSAGE_THREAD).ru_stime
    for i in range(count):
        fd = os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_stime - t0) / count * 1e6


def service(
    root: Path,
    copies: int,
    connections: int,
    processes: int,
    ack: str = "converted",
    profile: str | None = None,
    resend: bool = False,
) -> dict[str, float]:
    """One run in ``root`` (a new directory, left in place: the caller deletes it once every run is done)."""
    root.mkdir(parents=True)
    probe = creation_probe(root / "probe")
    load = os.getloadavg()[0]
    build_oru(root / "in", 900 if resend else 900 * copies)
    messages = [f.raw.rstrip(b"\r") for p in sorted((root / "in").iterdir()) for f in frames_of(p, 1 << 24)]
    if resend:  # the same feed ``copies`` times: every copy after the first resends the same reports
        messages *= copies
    mllp, health = free_port(), free_port()
    cfg = root / "engine.yaml"
    text = CONFIG.replace("ROOT", str(root)).replace("MLLP", str(mllp)).replace("HEALTH", str(health))
    cfg.write_text(text.replace("PROCESSES", str(processes)).replace("ACKMODE", ack))
    log = open(root / "engine.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "engine", "run", "--config", str(cfg)]
    if profile:  # py-spy (pip install py-spy): collapsed stacks per thread, every process of the engine
        extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()  # e.g. --gil: only threads holding the GIL
        command = [PYSPY, "record", "--threads", "--subprocesses", "--format", "raw", "-o", profile, *extra,
                   "--", *command]  # fmt: skip
    engine = subprocess.Popen(command, stderr=log, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", mllp), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        ctx = mp.get_context("fork")
        start = ctx.Event()
        pipes, procs = [], []
        for i in range(connections):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=sender, args=(mllp, messages[i::connections], start, send), daemon=True)
            proc.start()
            send.close()  # only the sender holds it: a sender that dies ends recv() with EOFError
            pipes.append(receive)
            procs.append(proc)
        time.sleep(0.3)
        threads0 = cpu_by_thread(engine.pid)
        cpu0 = sum(threads0.values())
        t0 = time.perf_counter()
        start.set()
        results = [p.recv() for p in pipes]
        acked = max(end for _, _, end in results) - t0
        db = root / "store" / "messages.db"
        while finished(db) < len(messages) and engine.poll() is None:
            time.sleep(0.05)
        done = time.perf_counter() - t0
        threads1 = cpu_by_thread(engine.pid)
        if os.environ.get("BENCH_THREADS") == "tid":  # name the threads (py-spy dump shows their names)
            dump = subprocess.run([PYSPY, "dump", "--pid", str(engine.pid)], capture_output=True, text=True)
            names = dict(re.findall(r'Thread (\d+) \([^)]*\): "([^"]+)"', dump.stdout))

            def named(key: str) -> str:  # "engine:python:123[ sys]" -> "engine:python:123:store-writer[ sys]"
                base, sys_cpu, _ = key.partition(" sys")
                return f"{base}:{names.get(base.rsplit(':', 1)[-1], '')}{sys_cpu}"

            threads0 = {named(k): v for k, v in threads0.items()}
            threads1 = {named(k): v for k, v in threads1.items()}
        cpu = sum(threads1.values()) - cpu0
    finally:
        if profile:
            for task in Path(f"/proc/{engine.pid}/task").iterdir():  # stop the engine (py-spy's child) by id
                for child in (task / "children").read_text().split():
                    os.kill(int(child), signal.SIGINT)
        else:
            engine.terminate()
        engine.wait(30)
        log.close()
    latencies = sorted(lat for lats, _, _ in results for lat in lats)
    errors = sum(e for _, e, _ in results)
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    outbox = sum(1 for p in (root / "outbox").iterdir() if not p.name.startswith("."))
    median = statistics.median(latencies) * 1000
    n = len(messages)
    print(f"service, {n:,} messages over {connections} MLLP connections, {processes} conversion "
          f"process(es), ack: {ack}: ACKs {n / acked:,.0f}/s (median {median:.1f} ms, "
          f"p99 {p99:.1f} ms, {errors} not AA); end to end {n / done:,.0f} messages/s "
          f"({outbox:,} Bundles durable in the outbox; engine CPU {cpu / n * 1e6:,.0f} µs per "
          f"message, all its processes; load {load:.1f}; file creation {probe:,.0f} µs)", flush=True)  # fmt: skip
    if os.environ.get("BENCH_THREADS"):  # where the engine's CPU went, per thread name
        for name, sec in sorted(threads1.items(), key=lambda kv: -kv[1]):
            print(f"    {name:40s} {(sec - threads0.get(name, 0.0)) / n * 1e6:8,.0f} µs/message")
    return {"acks": n / acked, "median_ms": median, "p99_ms": p99, "rate": n / done, "cpu_us": cpu / n * 1e6,
            "load": load, "probe_us": probe}  # fmt: skip


def runs(args: argparse.Namespace) -> None:
    """``--runs`` rounds, each mode of ``--ack`` once per round (alternating: both see the same load); every
    run's folders are deleted only after the last run (see the module docstring), then medians per mode."""
    modes = args.ack.split(",")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-service-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    stamp = time.strftime("%H%M%S")
    try:
        for run in range(args.runs):
            for mode in modes:
                root = work / f"run-{stamp}-{run}-{mode}"
                results[mode].append(
                    service(root, args.copies, args.connections, args.processes, mode, args.profile, args.resend)
                )
    finally:
        if not args.keep:  # only now, after every run: a mass delete slows the next file creations for minutes
            shutil.rmtree(work, ignore_errors=True)
    if args.runs > 1:
        for mode, rs in results.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            each = ", ".join(f"{r['rate']:,.0f}" for r in rs)
            print(f"median of {len(rs)} runs, ack: {mode}: end to end {med['rate']:,.0f} messages/s "
                  f"({each}); ACKs {med['acks']:,.0f}/s, median "
                  f"{med['median_ms']:.1f} ms, p99 {med['p99_ms']:.1f} ms; engine CPU {med['cpu_us']:,.0f} µs per "
                  f"message; load {med['load']:.1f}; file creation {med['probe_us']:,.0f} µs")  # fmt: skip


def keys() -> None:
    ctx = load_mapping_context(None)
    conv = Converter(ctx)
    messages = load_messages(ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7")
    for label, fn in (("partition_key_for (header only)", lambda m: partition_key_for(m, ctx)),
                      ("full conversion (before)", conv.convert)):  # fmt: skip
        t = time.process_time()
        for m in messages:
            fn(m)
        cpu = time.process_time() - t
        print(f"landing key, {label}: {len(messages) / cpu:,.0f} messages per CPU-second")


def kafka_landing(bootstrap: str, count: int = 3000, threads: int = 4, linger_ms: int | None = None) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from engine.kafka import KafkaLanding
    from engine.kafka.settings import KafkaSettings

    raw: dict[str, object] = {"bootstrap_servers": bootstrap}
    if linger_ms is not None:
        raw["linger_ms"] = linger_ms
    settings = KafkaSettings.from_mapping(raw)
    landing = KafkaLanding(settings)
    messages = load_messages(ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7")
    batch = [messages[i % len(messages)] for i in range(count)]

    def land(m: bytes) -> str:
        return landing.land(m, content_type="x-application/hl7-v2+er7", source="bench", headers={})

    land(batch[0])
    t0, cpu0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(land, batch))
    rate = count / (time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / count * 1e6
    landing.close()
    print(f"Kafka landing ({threads} threads, acks=all, linger_ms={settings.linger_ms}, keyed from the header): "
          f"{rate:,.0f} messages/s ({cpu:,.0f} µs CPU per message in the landing process)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--ack", default="converted", help="converted, stored, or both: converted,stored")
    parser.add_argument("--runs", type=int, default=1, help="rounds; each mode of --ack once per round")
    parser.add_argument("--workdir", help="where the runs' folders go (default: a new one under TMPDIR)")
    parser.add_argument("--resend", action="store_true", help="send the same feed --copies times (resends)")
    parser.add_argument("--keep", action="store_true", help="leave the runs' folders (delete them yourself later)")
    parser.add_argument("--profile", metavar="FILE", help="record the engine with py-spy (collapsed stacks)")
    parser.add_argument("--bootstrap")
    parser.add_argument("--kafka-only", action="store_true", help="only the Kafka landing (needs --bootstrap)")
    parser.add_argument("--threads", type=int, default=4, help="Kafka landing: concurrent landers")
    parser.add_argument("--linger-ms", type=int, help="Kafka landing: producer linger_ms (default: the setting's)")
    args = parser.parse_args()
    if not args.kafka_only:
        keys()
        if set(args.ack.split(",")) - {"converted", "stored"}:
            parser.error("--ack: converted, stored or converted,stored")
        runs(args)
    if args.bootstrap:
        kafka_landing(args.bootstrap, threads=args.threads, linger_ms=args.linger_ms)


if __name__ == "__main__":
    main()
