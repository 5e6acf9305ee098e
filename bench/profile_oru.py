"""Where the time goes, per ORU message: CPU time of each stage over the 900-message WashU feed.

    .venv/bin/python bench/profile_oru.py [--passes 3]
    .venv/bin/pyinstrument bench/profile_oru.py          # the call tree (pyinstrument is a test dependency)

Stages: framing (``split_stream``), tokenizing (``er7.parse_message``), mapping (``map_oru``), shaping
(``shape``), serializing (``serialize``), partition key. Every ``lru_cache`` of ``pipelines`` (dates, codes,
practitioners) is cleared before every pass, so repeated passes do not flatter the figures. CPU time
(``time.process_time``). Timing lives here, never in tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine._dispatch import partition_key  # noqa: E402
from engine.backfill.formats import frames_of  # noqa: E402
from engine.cmd_map import load_mapping_context  # noqa: E402
from pipelines.errors import MappingError  # noqa: E402
from pipelines.hl7v2 import split_stream  # noqa: E402
from pipelines.hl7v2.er7 import decode_message, parse_message  # noqa: E402
from pipelines.hl7v2.oru import map_oru  # noqa: E402
from pipelines.output import serialize, shape  # noqa: E402

BULK = ROOT.parent / "shared" / "testdata" / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"
STAGES = ("framing", "tokenizing", "mapping", "shaping", "serializing", "partition key")


def clear_caches() -> int:
    """Clear every ``functools.lru_cache`` of the ``pipelines`` modules (dates, codes, practitioners, ...), so
    that a pass over the same feed only hits on values that repeat inside the feed, as a real backfill
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


def one_pass(frames: list[bytes], totals: dict[str, float] | None) -> None:
    ctx = load_mapping_context(None)
    clear_caches()
    clock = time.process_time
    for raw in frames:
        t0 = clock()
        chunk = split_stream(raw)[0]
        t1 = clock()
        text, codec = decode_message(chunk.data)
        msg = parse_message(text)
        msg.charset = codec
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
    args = parser.parse_args()
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
