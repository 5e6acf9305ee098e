"""``engine map`` keeps bounded memory: duplicate keys and distinct Bundle ids move from memory to a temporary
SQLite file past a limit (engine.backfill.spill); answers are the same before and after, ``summary.json`` is the
same whether it spilled or not, and no file is left behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from engine.backfill import spill
from engine.backfill.checkpoint import MemoryCheckpoint
from engine.backfill.spill import SpillMap
from engine.cli import main
from tests.conftest import TESTDATA

BULK = TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


def _key(n: int) -> bytes:
    return n.to_bytes(16, "big")


def test_answers_are_the_same_before_and_after_the_spill(tmp_path: Path) -> None:
    m = SpillMap(limit=10, directory=str(tmp_path))
    assert [m.setdefault(_key(i), f"unit-{i}") for i in range(10)] == [f"unit-{i}" for i in range(10)]
    assert not m.spilled and len(m) == 10
    assert m.setdefault(_key(10), "unit-10") == "unit-10"  # the 11th entry moves everything to the file
    assert m.spilled and len(m) == 11
    assert m.setdefault(_key(3), "other") == "unit-3"  # kept from before the spill, not overwritten
    assert m.setdefault(_key(10), "other") == "unit-10"
    assert m.setdefault(_key(500), "unit-500") == "unit-500" and len(m) == 12
    m.add("bundle-a")
    m.add("bundle-a")
    assert len(m) == 13  # set semantics for ids
    assert list(tmp_path.iterdir()) == []  # the file is unlinked while open: nothing to leave behind
    m.close()
    assert list(tmp_path.iterdir()) == []


def test_memory_checkpoint_claims_across_the_spill() -> None:
    seen = MemoryCheckpoint(spill_at=4)
    first = seen.claim([(_key(i), f"a.hl7#{i}") for i in range(6)])
    assert first == [None] * 6
    again = seen.claim([(_key(1), "b.hl7#1"), (_key(7), "b.hl7#2"), (_key(5), "b.hl7#3"), (_key(7), "b.hl7#4")])
    assert again == ["a.hl7#1", None, "a.hl7#5", "b.hl7#2"]
    assert seen.claim([(_key(7), "b.hl7#2")]) == [None]  # the same unit again (a resumed read) is not a duplicate
    seen.close()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_engine_map_summary_is_the_same_when_it_spills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    feed = BULK.read_bytes()
    (src / "feed.hl7").write_bytes(feed)
    (src / "again.hl7").write_bytes(feed[: len(feed) // 2])  # exact repeats of the first messages: duplicates
    outputs = {}
    for label, limit in (("memory", None), ("spilled", 5)):
        if limit is not None:
            monkeypatch.setattr(spill, "SPILL_AT", limit)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / f"tmp-{label}"))  # where a spill file would go
        (tmp_path / f"tmp-{label}").mkdir()
        out = tmp_path / label
        assert main(["map", "--quiet", "--workers", workers, "--out", str(out), str(src)]) == 0
        outputs[label] = json.loads((out / "summary.json").read_text())
        assert [n for n in os.listdir(tmp_path / f"tmp-{label}") if n.startswith("engine-map-")] == []
        assert {p.name for p in out.iterdir()} - {"summary.json"}
    memory, spilled = outputs["memory"], outputs["spilled"]
    assert memory == spilled
    assert memory["duplicates"] > 5 and memory["bundles"] > 5  # both maps did spill at 5
