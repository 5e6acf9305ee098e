"""Where the MLLP acknowledgement waits: the intake alone (listener, message store, conversion processes; no
worker, no sinks), in this process, with the store's group commits timed.

    .venv/bin/python bench/bench_intake_latency.py [--ack converted|stored] [--processes 1] [--connections 4]

Sends the 900-message WashU feed over ``--connections`` persistent connections (send, wait for the ACK, next) to
an :class:`engine.sources.mllp.MllpListener` landing in a :class:`engine.store.MessageStore` (``ack: converted``:
converting in ``--processes`` conversion processes, as ``engine run`` with ``worker.processes``), and prints the
ACK rate, ACK latency median / mean, the store's group commit time median / mean (``BEGIN`` .. ``COMMIT`` with its
fsync) and landings per commit. With ``ack: stored`` the ACK waits for the commit only; with ``converted`` for the
commit and the conversion's round trip, whichever is longer.

Timing lives here, never in tests. The machine is shared: quote medians of several runs with ``uptime``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ack", choices=("converted", "stored"), default="converted")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()

    from bench_mllp import load_messages

    import engine.store_writer as store_writer
    from engine.cmd_map import load_mapping_context
    from engine.pooled import PooledConverter
    from engine.sources.mllp import MllpListener, MllpSettings
    from engine.sources.mllp_framing import frame
    from engine.store import MessageStore

    messages = load_messages(ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7")
    commits: list[float] = []
    groups: list[int] = []
    commit = store_writer.GroupCommitWriter._commit

    def timed(self: Any, conn: Any, batch: Any) -> None:
        started = time.perf_counter()
        commit(self, conn, batch)
        commits.append(time.perf_counter() - started)
        groups.append(len(batch))

    store_writer.GroupCommitWriter._commit = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        store = MessageStore(Path(tmp) / "m.db")
        pooled = PooledConverter(load_mapping_context(None), processes=args.processes)
        listener = MllpListener(MllpSettings.from_mapping({"port": 0, "ack": args.ack}), store, converter=pooled)
        listener.start()
        latencies: list[float] = []

        def send(share: list[bytes]) -> None:
            with socket.create_connection(("127.0.0.1", listener.port)) as sock:
                for message in share:
                    started = time.perf_counter()
                    sock.sendall(frame(message))
                    data = b""
                    while not data.endswith(b"\x1c\r"):
                        data += sock.recv(65536)
                    latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        senders = [threading.Thread(target=send, args=(messages[i :: args.connections],))
                   for i in range(args.connections)]  # fmt: skip
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        elapsed = time.perf_counter() - started
        listener.stop()
        pooled.close()
        store.close()
    print(
        f"intake, {len(messages)} messages over {args.connections} connections, ack: {args.ack}, "
        f"{args.processes} conversion process(es): {len(messages) / elapsed:,.0f} ACKs/s; ACK median "
        f"{statistics.median(latencies) * 1e3:.1f} ms, mean {statistics.mean(latencies) * 1e3:.1f} ms; store commit "
        f"median {statistics.median(commits) * 1e3:.1f} ms, mean {statistics.mean(commits) * 1e3:.1f} ms, "
        f"{statistics.mean(groups):.2f} operations per commit"
    )


if __name__ == "__main__":
    main()
