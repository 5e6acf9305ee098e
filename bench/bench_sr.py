"""DICOM SR throughput: parse + map + shape + serialize every file of ../shared/testdata/dicom-sr-*
(Part 10 .dcm and the DICOM JSON sample) repeatedly in one process, through the real Converter for
Part 10 files (the same call ``engine map`` makes) and ``map_dicom`` for the DICOM JSON sample.

    .venv/bin/python bench/bench_sr.py [--runs 7] [--repeat 20] [--cold]

Each run converts the whole set ``--repeat`` times; prints files per second (median of the runs) by
wall clock and by CPU time of this single-threaded process (= per core, and robust to other load on
the machine), the slowest files, and peak memory. Timing lives here, never in tests.

The SR reader memoises decoded codes, references and small sequences across files (bounded, pure). Repeating
the same 20 files keeps them warm; ``--cold`` empties every memo before each file (outside the timed call), the
worst case for an archive whose files share nothing.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.cmd_map import load_mapping_context  # noqa: E402
from engine.convert import Converter  # noqa: E402
from pipelines.dicom_sr import charset, map_dicom, rawparse, rawtree  # noqa: E402
from pipelines.output import serialize, shape  # noqa: E402

SHARED = ROOT.parent / "shared" / "testdata"


def _files() -> list[Path]:
    return sorted(p for d in SHARED.glob("dicom-sr-*") for p in d.rglob("*") if p.is_file())


def _job(converter: Converter, path: Path) -> Callable[[], int]:
    data = path.read_bytes()
    if path.suffix == ".json":  # DICOM JSON: map_dicom reads it; the dispatcher routes Part 10 only

        def run_json() -> int:
            reports = map_dicom(data, converter.context)
            return sum(len(serialize(shape(r)[0])) for r in reports)

        return run_json

    def run() -> int:
        result = converter.convert(data)
        return sum(len(o.body) for o in result.outputs)

    return run


def _memo_emptier() -> Callable[[], None]:
    """Empties the SR reader's memos: the byte-level ones and every character set's code and reference memos."""
    sets = [o for o in gc.get_objects() if isinstance(o, charset.Charset)]

    def empty() -> None:
        rawparse._SMALL.clear()
        rawparse._SMALL_UNDEFINED.clear()
        rawtree._ASCII.clear()
        for cs in sets:
            cs.codes.clear()
            cs.refs.clear()

    return empty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--cold", action="store_true", help="empty the SR reader's memos before every file")
    args = parser.parse_args()
    converter = Converter(load_mapping_context(None))
    files = _files()
    jobs = [(p, _job(converter, p)) for p in files]
    out_bytes = sum(job() for _, job in jobs)  # warm-up (imports, profile caches)
    print(
        f"SR set: {len(files)} files, {sum(p.stat().st_size for p in files) / 1024:.0f} KiB in, "
        f"{out_bytes / 1024:.0f} KiB of Bundles out per pass"
    )
    empty = _memo_emptier() if args.cold else None
    rates, cpu_rates = [], []
    per_file: dict[str, list[float]] = {p.name: [] for p in files}
    for _ in range(args.runs):
        wall = cpu = 0.0
        for _ in range(args.repeat):
            for path, job in jobs:
                if empty is not None:
                    empty()
                t, c = time.perf_counter(), time.process_time()
                job()
                spent = time.perf_counter() - t
                wall, cpu = wall + spent, cpu + time.process_time() - c
                per_file[path.name].append(spent)
        rates.append(len(jobs) * args.repeat / wall)
        cpu_rates.append(len(jobs) * args.repeat / cpu)
    tracemalloc.start()
    for _, job in jobs:
        job()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"in-process parse+map+shape+serialize: median {statistics.median(rates):,.0f} files/s wall clock "
        f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); median {statistics.median(cpu_rates):,.0f} files per "
        f"CPU-second of this single-threaded process = per core (runs: {', '.join(f'{r:,.0f}' for r in cpu_rates)})"
    )
    print(f"peak traced memory per pass {peak / 2**20:.1f} MiB; process peak RSS {rss:.0f} MiB")
    slowest = sorted(per_file.items(), key=lambda kv: -statistics.median(kv[1]))[:5]
    print("slowest files (median ms): " + ", ".join(f"{n} {statistics.median(v) * 1000:.2f}" for n, v in slowest))


if __name__ == "__main__":
    main()
