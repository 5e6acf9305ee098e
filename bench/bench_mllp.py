"""MLLP intake: acknowledged messages per second and ACK latency with persist-before-ACK.

Starts :class:`engine.sources.mllp.MllpListener` on 127.0.0.1 with the real durable landing
(:class:`engine.store.MessageStore`: SQLite WAL, ``synchronous=FULL``, group commit) in a fresh temporary
folder, then loopback MLLP senders in separate processes, each on one persistent connection that sends a
message and waits for its ACK before sending the next (no pipelining). The 900 ORU of the WashU bulk
feed are split round-robin over the connections; every ACK must answer its own MSH-10 (``AA``; with
``--ack converted``, the default, ``AR`` for the feed's status-only ORUs) and the store must hold all 900.

    .venv/bin/python bench/bench_mllp.py [--runs 3] [--connections 1 4] [--landing store|fsync|null]
        [--ack converted|stored] [--convert-processes N]

``--landing fsync`` uses a minimal one-transaction-and-fsync-per-message SQLite landing (no group
commit) and ``--landing null`` stores nothing, for comparison. Prints, per connection count, the median
over the runs of: acknowledged messages per second, ACK latency median and p99 (ms).
Timing lives here, never in tests.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.sources.mllp import MllpListener, MllpSettings  # noqa: E402
from engine.sources.mllp_framing import frame  # noqa: E402

BULK = ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


def load_messages(path: Path) -> list[bytes]:
    """Messages of the bulk file: a new message starts at every line beginning with MSH."""
    messages: list[bytes] = []
    for line in path.read_bytes().split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"MSH"):
            messages.append(line)
        elif line and messages:
            messages[-1] += b"\r" + line
    return messages


def control_id(message: bytes) -> bytes:
    return message.split(b"\r", 1)[0].split(b"|")[9]


class FsyncSqliteLanding:
    """Baseline without group commit: one INSERT transaction (WAL, synchronous=FULL) per message."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE landed (id INTEGER PRIMARY KEY, payload BLOB, headers TEXT)")
        self._lock = threading.Lock()

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        with self._lock:
            cur = self._db.execute("INSERT INTO landed (payload, headers) VALUES (?, ?)", (payload, repr(headers)))
            return str(cur.lastrowid)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM landed").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class NullLanding:
    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def land(self, payload: bytes, *, content_type: str, source: str, headers: Mapping[str, str]) -> str:
        with self._lock:
            self.n += 1
            return str(self.n)

    def count(self) -> int:
        return self.n

    def close(self) -> None:
        pass


def sender(port: int, messages: Sequence[bytes], start: Any, out: Connection) -> None:
    """One persistent connection: send, wait for the ACK, check it, next. Reports latencies (s)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies: list[float] = []
    errors = 0
    start.wait()
    for message in messages:
        t0 = time.perf_counter()
        sock.sendall(frame(message))
        data = b""
        while not data.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("listener closed the connection")
            data += chunk
        latencies.append(time.perf_counter() - t0)
        if not any(b"\rMSA|" + code + b"|" + control_id(message) in data for code in (b"AA", b"AR", b"AE")):
            errors += 1
    sock.close()
    out.send((latencies, errors, time.perf_counter()))
    out.close()


def make_landing(kind: str, folder: Path) -> Any:
    if kind == "store":
        from engine.store import MessageStore

        store = MessageStore(folder / "store.sqlite")
        store.count = lambda: sum(store.counts().values())  # type: ignore[attr-defined]
        return store
    if kind == "fsync":
        return FsyncSqliteLanding(folder / "fsync.sqlite")
    return NullLanding()


def one_run(
    messages: Sequence[bytes], connections: int, kind: str, ack: str, processes: int = 0
) -> tuple[float, float, float]:
    from engine.cmd_map import load_mapping_context
    from engine.convert import Converter

    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="bench-mllp-") as tmp:
        landing = make_landing(kind, Path(tmp))
        settings = MllpSettings.from_mapping({"port": 0, "ack": ack, "convert_processes": processes})
        listener = MllpListener(settings, landing, converter=Converter(load_mapping_context(None)))
        listener.start()
        try:
            start = ctx.Event()
            pipes, procs = [], []
            for i in range(connections):
                receive, send = ctx.Pipe(duplex=False)
                share = list(messages[i::connections])
                proc = ctx.Process(target=sender, args=(listener.port, share, start, send), daemon=True)
                proc.start()
                send.close()  # only the sender holds it: a sender that dies ends recv() with EOFError
                pipes.append(receive)
                procs.append(proc)
            time.sleep(0.3)  # let every sender connect
            t0 = time.perf_counter()
            start.set()
            results = [p.recv() for p in pipes]
            for proc in procs:
                proc.join(30)
        finally:
            listener.stop()
        elapsed = max(end for _, _, end in results) - t0
        latencies = sorted(lat for lats, _, _ in results for lat in lats)
        errors = sum(e for _, e, _ in results)
        stored = landing.count()
        landing.close()
    if errors or len(latencies) != len(messages) or stored != len(messages):
        raise SystemExit(f"bench failed: {errors} bad ACKs, {len(latencies)} ACKs, {stored} stored")
    p99 = statistics.quantiles(latencies, n=100)[98]
    return len(messages) / elapsed, statistics.median(latencies) * 1000, p99 * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--landing", choices=("store", "fsync", "null"), default="store")
    parser.add_argument("--file", type=Path, default=BULK)
    parser.add_argument("--ack", choices=("converted", "stored"), default="converted")
    parser.add_argument("--convert-processes", type=int, default=0, help="sources.mllp.convert_processes")
    args = parser.parse_args(argv)
    messages = load_messages(args.file)
    print(
        f"{len(messages)} messages from {args.file.name}; landing={args.landing}; ack={args.ack}; "
        f"{args.runs} runs each; "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    for connections in args.connections:
        runs = [
            one_run(messages, connections, args.landing, args.ack, args.convert_processes) for _ in range(args.runs)
        ]
        for i, (rate, med, p99) in enumerate(runs, 1):
            print(f"  {connections} conn run {i}: {rate:8.0f} ack/s  median {med:6.2f} ms  p99 {p99:6.2f} ms")
        rate = statistics.median(r[0] for r in runs)
        med = statistics.median(r[1] for r in runs)
        p99 = statistics.median(r[2] for r in runs)
        print(
            f"{connections} connection(s): {rate:.0f} acknowledged messages/s, "
            f"ACK latency median {med:.2f} ms, p99 {p99:.2f} ms (median of {args.runs} runs)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
