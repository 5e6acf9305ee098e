"""The message store alone, as the service uses it: ``--senders`` threads land messages (each waits for its commit,
like the MLLP listener's connections), one worker thread polls with ``linger`` and records ``mark_mapped`` and
``finish`` per batch. Prints the CPU per message of the store's writer thread (user and system apart: system is
mostly the WAL's write calls and fsyncs), of the worker thread, and of the whole process.

    .venv/bin/python bench/bench_store.py [--messages 4500] [--senders 4] [--pause-ms 2] [--workdir DIR]

``--pause-ms``: each sender waits this long between landings (the conversion and ACK round trip of the service:
2 ms over 4 senders is ~1,000-1,500 messages/s). The store files stay in ``--workdir`` (default: a new directory
under ``TMPDIR``, kept; delete it after your runs: see bench/bench_service.py on deletes and file creation).
``strace -f -c`` around it counts the write calls. Timing lives here, never in tests; quote medians of runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mllp import load_messages  # noqa: E402

from engine.sources.base import CONTENT_HL7V2  # noqa: E402
from engine.store import PUBLISHED, MessageStore, Outcome, StoreSource  # noqa: E402

FEED = ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


def thread_cpu(native_id: int) -> tuple[float, float]:
    """User and system CPU seconds of one thread of this process (Linux /proc)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=4500)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--pause-ms", type=float, default=2.0)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    feed = load_messages(FEED)
    messages = [feed[i % len(feed)] for i in range(args.messages)]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-store-"))
    work.mkdir(parents=True, exist_ok=True)
    store = MessageStore(work / f"store-{time.strftime('%H%M%S')}-{os.getpid()}.db")
    writer_id = store._writer._thread.native_id or 0
    stop = threading.Event()
    worker_cpu: list[float] = []

    def send(share: list[bytes]) -> None:
        for m in share:
            store.land(m, content_type=CONTENT_HL7V2, source="mllp", headers={"hl7.control-id": "x"})
            time.sleep(args.pause_ms / 1000)

    def work_loop() -> None:
        source = StoreSource(store, linger=0.1)
        t0 = time.thread_time()
        while not stop.is_set() or store.count_unfinished(1):
            envelopes = source.poll(200, 0.2)
            if envelopes:
                source.mark_mapped([(e, ["bundle"]) for e in envelopes])
                source.finish([(e, Outcome(PUBLISHED, outputs=("bundle",))) for e in envelopes])
        worker_cpu.append(time.thread_time() - t0)

    w0, t0, p0 = thread_cpu(writer_id), time.perf_counter(), time.process_time()
    worker = threading.Thread(target=work_loop)
    worker.start()
    senders = [threading.Thread(target=send, args=(messages[i :: args.senders],)) for i in range(args.senders)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    stop.set()
    worker.join()
    elapsed, cpu, w1 = time.perf_counter() - t0, time.process_time() - p0, thread_cpu(writer_id)
    n = len(messages)
    store.close()
    print(f"store, {n:,} messages, {args.senders} senders: {n / elapsed:,.0f} messages/s; CPU per message: writer "
          f"thread {(w1[0] - w0[0]) / n * 1e6:,.0f} user + {(w1[1] - w0[1]) / n * 1e6:,.0f} system µs, worker "
          f"thread {worker_cpu[0] / n * 1e6:,.0f} µs, whole process {cpu / n * 1e6:,.0f} µs "
          f"(load {os.getloadavg()[0]:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
