"""Where the time goes, per ORU message: CPU time of each stage over the 900-message WashU feed.

    .venv/bin/python bench/profile_oru.py [--passes 3] [--tree /work/main]
    .venv/bin/pyinstrument bench/profile_oru.py          # the call tree (pyinstrument is a test dependency)

Stages: framing (``split_stream``), tokenizing (``er7.parse_message``), mapping (``map_oru``), shaping
(``shape``), serializing (``serialize``), partition key. Every ``lru_cache`` of ``pipelines`` (dates, codes,
practitioners) is cleared before every pass, so repeated passes do not flatter the figures. CPU time
(``time.process_time``). Tokenizing includes the control-character check that lets the mapping skip
per-value cleaning, as ``pipelines.hl7v2.map_message`` does. ``--tree`` profiles another checkout's code with
this same harness. Timing lives here, never in tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from bench_oru import clear_caches

ROOT = Path(__file__).resolve().parent.parent
BULK = ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"
STAGES = ("framing", "tokenizing", "mapping", "shaping", "serializing", "partition key")


def one_pass(frames: list[bytes], totals: dict[str, float] | None) -> None:
    from engine._dispatch import partition_key
    from engine.cmd_map import load_mapping_context
    from pipelines.errors import MappingError
    from pipelines.hl7v2 import _CONTROL_BYTES, split_stream
    from pipelines.hl7v2.er7 import decode_message, parse_message
    from pipelines.hl7v2.oru import map_oru
    from pipelines.output import serialize, shape

    ctx = load_mapping_context(None)
    clear_caches()
    clock = time.process_time
    clean: dict[Any, Any] = {}
    for raw in frames:
        t0 = clock()
        chunk = split_stream(raw)[0]
        t1 = clock()
        text, codec = decode_message(chunk.data)
        msg = parse_message(text)
        msg.charset = codec
        if len(chunk.data.translate(None, _CONTROL_BYTES)) == len(chunk.data):
            d = msg.delimiters
            msg.delimiters = clean.get(d) or clean.setdefault(d, dataclasses.replace(d, clean=True))
        t2 = clock()
        try:
            reports = map_oru(msg, ctx)
        except MappingError:
            continue
        t3 = clock()
        bundles = [shape(r, "document")[0] for r in reports]
        t4 = clock()
        for bundle in bundles:
            serialize(bundle)
        t5 = clock()
        for report in reports:
            partition_key(report)
        t6 = clock()
        if totals is not None:
            for stage, a, b in zip(STAGES, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6), strict=True):
                totals[stage] += b - a


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--tree", type=Path, help="profile another checkout's code (e.g. /work/main)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve() if args.tree else ROOT))
    from engine.backfill.formats import frames_of

    frames = [f.raw for f in frames_of(BULK, 1 << 24)]
    one_pass(frames, None)  # warm-up
    totals = dict.fromkeys(STAGES, 0.0)
    for _ in range(args.passes):
        one_pass(frames, totals)
    n = args.passes * len(frames)
    total = sum(totals.values())
    print("| stage | us per message | share |\n|---|---|---|")
    for stage, seconds in totals.items():
        print(f"| {stage} | {seconds / n * 1e6:,.0f} | {100 * seconds / total:.0f} % |")
    print(f"| total | {total / n * 1e6:,.0f} | {n / total:,.0f} messages per CPU-second |")


if __name__ == "__main__":
    main()
