"""Where the time goes in the SR conversion: CPU time per stage over the shared Part 10 SR files
(``../shared/testdata/dicom-sr-*/*.dcm``), the same steps ``pipelines.dicom_sr.mapper.parse`` and
``engine._dispatch`` take, timed one by one (``time.process_time``, so other load on the machine counts less).

    .venv/bin/python bench/profile_sr.py [--passes 40]

``.venv/bin/pyinstrument bench/profile_sr.py --passes 5`` gives the call tree. Timing lives here, never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.cmd_map import load_mapping_context  # noqa: E402
from pipelines.dicom_sr import header, mapper, rawtree, reader  # noqa: E402
from pipelines.dicom_sr.part10 import read_part10  # noqa: E402
from pipelines.errors import MappingError  # noqa: E402
from pipelines.output import serialize, shape  # noqa: E402

SHARED = ROOT.parent / "shared" / "testdata"
_CURRENT, _OTHER, _CONTENT = 0x0040A375, 0x0040A385, 0x0040A730


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passes", type=int, default=40)
    args = parser.parse_args()
    ctx = load_mapping_context(None)
    files = sorted(p for d in SHARED.glob("dicom-sr-*") for p in d.rglob("*.dcm"))
    datas = [(p.name, p.read_bytes()) for p in files]
    stages: Counter[str] = Counter()
    per_file: Counter[str] = Counter()

    def timed(stage: str, name: str, step: Callable[[], Any]) -> Any:
        t = time.process_time()
        try:
            return step()
        finally:
            spent = time.process_time() - t
            stages[stage] += spent
            per_file[name] += spent

    for _ in range(args.passes):
        for name, data in datas:
            with contextlib.suppress(MappingError):  # filtered / rejected: counted up to the stage that decided
                _one(timed, name, data, ctx)
    total = sum(stages.values())
    print(f"{len(datas)} Part 10 SR files, {args.passes} passes; CPU ms per pass (all files)")
    print("| stage | ms per pass | share |\n|---|---|---|")
    for stage, spent in stages.most_common():
        print(f"| {stage} | {spent / args.passes * 1000:.1f} | {spent / total * 100:.0f} % |")
    print(f"| **total** | **{total / args.passes * 1000:.1f}** | |")
    print("slowest files (ms): " + ", ".join(f"{n} {v / args.passes * 1000:.2f}" for n, v in per_file.most_common(5)))


def _one(timed: Callable[[str, str, Callable[[], Any]], Any], name: str, data: bytes, ctx: Any) -> None:
    fast = timed("read (part10: header elements + raw content/evidence items)", name, lambda: read_part10(data))
    if fast is not None:
        ds, cut = fast
    else:
        split = timed("read (fallback: split_content + dcmread)", name, lambda: rawtree.split_content(data))
        ds = timed(
            "read (fallback: split_content + dcmread)", name, lambda: reader.read_dataset(split[0] if split else data)
        )
        cut = split[1] if split else None
    decode = mapper._decoder(ds)
    kind = timed("classify", name, lambda: mapper.classify(ds))
    refs = None
    if cut is not None:
        items = cut.get(_CURRENT, []) + cut.get(_OTHER, [])
        refs = timed(
            "evidence",
            name,
            lambda: (rawtree.evidence(items, decode), rawtree.study_uids(cut.get(_CURRENT, []), decode)),
        )
    h = timed("header (read_header)", name, lambda: header.read_header(ds, ctx, refs))
    if kind != "sr":
        return
    content = cut.get(_CONTENT, []) if cut is not None else None
    root = timed(
        "content tree (items_to_tree)",
        name,
        lambda: rawtree.items_to_tree(content, decode) if content is not None else mapper.content_tree(ds),
    )
    parsed = mapper.Parsed(kind, h, root, mapper._root_value(ds))
    report = timed("map (dose / TID 1500 / TID 2000)", name, lambda: mapper.map_parsed(parsed))
    bundle = timed("shape (pipelines.output)", name, lambda: shape(report))
    timed("serialize (orjson)", name, lambda: serialize(bundle[0]))


if __name__ == "__main__":
    main()
