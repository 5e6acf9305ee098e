"""ORU throughput: parse + map + shape + serialize the 900-message sample feed repeatedly in one process,
then the whole ``engine map`` command on 4,500 messages (the feed five times over).

    .venv/bin/python bench/bench_oru.py [--runs 5] [--in-process] [--tree /work/main]

Prints messages per second (wall clock, median of the runs), CPU microseconds per message
(``time.process_time``; steady state, and again with every ``pipelines`` cache emptied before each pass so
that only values repeated inside the feed hit) and peak memory. ``--tree`` measures another checkout's code with
this same harness (compare before/after interleaved). Timing lives here, never in tests.
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
BULK = ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


def clear_caches() -> int:
    """Clear every ``functools.lru_cache`` of the loaded ``pipelines`` modules (dates, codes, practitioners,
    ...), so that a pass over the same feed only hits on values repeated inside the feed, as a real backfill
    would (it never sees the same message twice). Returns how many caches were cleared."""
    n = 0
    for name, module in list(sys.modules.items()):
        if name == "pipelines" or name.startswith("pipelines."):
            for value in list(vars(module).values()):
                clear = getattr(value, "cache_clear", None)
                if callable(clear) and str(getattr(value, "__module__", "")).startswith("pipelines"):
                    clear()
                    n += 1
    return n


def in_process(runs: int) -> None:
    from engine.cmd_map import load_mapping_context
    from engine.convert import Converter

    data = BULK.read_bytes()
    converter = Converter(load_mapping_context(None))
    result = converter.convert(data)
    print(f"feed: {result.messages} messages -> {len(result.outputs)} bundles, {len(result.rejections)} rejected")
    for _ in range(2):  # warm-up passes (allocator, CPU clock ramp-up); a backfill runs at steady state
        converter.convert(data)
    rates, cpu, cold_cpu = [], [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        result = converter.convert(data)
        c1, t1 = time.process_time(), time.perf_counter()
        rates.append(result.messages / (t1 - t0))
        cpu.append((c1 - c0) / result.messages * 1e6)
    for _ in range(runs):  # the same with every pipelines cache emptied first: only repeats inside the feed hit
        clear_caches()
        c0 = time.process_time()
        result = converter.convert(data)
        cold_cpu.append((time.process_time() - c0) / result.messages * 1e6)
    tracemalloc.start()
    converter.convert(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"in-process parse+map+serialize: median {statistics.median(rates):,.0f} msg/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); peak traced memory {peak / 2**20:.1f} MiB"
    )
    print(
        f"in-process CPU per message: median {statistics.median(cpu):,.0f} us "
        f"(runs: {', '.join(f'{c:,.0f}' for c in cpu)}); with caches emptied before each pass: median "
        f"{statistics.median(cold_cpu):,.0f} us"
    )


def whole_command(runs: int, tree: Path | None) -> None:
    # another checkout (--tree) runs its own code: `python -m engine` from its directory
    engine = [sys.executable, "-m", "engine"] if tree else [str(Path(sys.executable).parent / "engine")]
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
            cmd = [*engine, "map", "--quiet", "--config", str(config), "--out", str(out), str(inputs)]
            proc = subprocess.run(cmd, capture_output=True, cwd=tree)
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
    parser.add_argument("--in-process", action="store_true", help="skip the whole-command runs")
    parser.add_argument("--tree", type=Path, help="measure another checkout's code (e.g. /work/main), same harness")
    args = parser.parse_args()
    tree = args.tree.resolve() if args.tree else None
    sys.path.insert(0, str(tree or ROOT))
    print(f"code: {tree or ROOT}")
    in_process(args.runs)
    if not args.in_process:
        whole_command(max(3, args.runs // 2), tree)


if __name__ == "__main__":
    main()
