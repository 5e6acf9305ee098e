"""ORU throughput: parse + map + shape + serialize the 900-message sample feed repeatedly in one process,
then the whole ``engine map`` command on 4,500 messages (the feed five times over).

    .venv/bin/python bench/bench_oru.py [--runs 5]

Prints messages per second (median of the runs) and peak memory. Timing lives here, never in tests.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.cmd_map import load_mapping_context  # noqa: E402
from engine.convert import Converter  # noqa: E402

BULK = ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


def in_process(runs: int) -> None:
    data = BULK.read_bytes()
    converter = Converter(load_mapping_context(None))
    result = converter.convert(data)
    print(f"feed: {result.messages} messages -> {len(result.outputs)} bundles, {len(result.rejections)} rejected")
    for _ in range(2):  # warm-up passes (allocator, CPU clock ramp-up); a backfill runs at steady state
        converter.convert(data)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = converter.convert(data)
        rates.append(result.messages / (time.perf_counter() - t0))
    tracemalloc.start()
    converter.convert(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"in-process parse+map+serialize: median {statistics.median(rates):,.0f} msg/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); peak traced memory {peak / 2**20:.1f} MiB"
    )


def whole_command(runs: int) -> None:
    engine = Path(sys.executable).parent / "engine"
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        # Five distinct copies of the feed (sending application SOMERIS0..4, each with the feed's sender
        # profile), so that 4,500 messages give ~4,250 distinct Bundles rather than overwrites.
        senders = []
        for i in range(5):
            (inputs / f"feed-{i}.hl7").write_bytes(BULK.read_bytes().replace(b"|SOMERIS|", f"|SOMERIS{i}|".encode()))
            senders.append(
                f"    - {{sending_application: SOMERIS{i}, accession_field: OBR-3, "
                f"accession_system: 'urn:imaging-engine:sid/ABCHOSP{i}/accession'}}"
            )
        config = Path(tmp) / "bench.yaml"
        config.write_text("mapping:\n  senders:\n" + "\n".join(senders) + "\n")
        rates = []
        for n in range(runs):
            out = Path(tmp) / f"out{n}"
            t0 = time.perf_counter()
            cmd = [str(engine), "map", "--quiet", "--config", str(config), "--out", str(out), str(inputs)]
            proc = subprocess.run(cmd, capture_output=True)
            elapsed = time.perf_counter() - t0
            if proc.returncode not in (0, 1):
                raise SystemExit(proc.stderr.decode())
            rates.append(4500 / elapsed)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"engine map on 4,500 messages (5 files): median {statistics.median(rates):,.0f} msg/s "
            f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); peak RSS {peak:.0f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    in_process(args.runs)
    whole_command(max(3, args.runs // 2))


if __name__ == "__main__":
    main()
