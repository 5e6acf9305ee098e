"""`engine map` over every shared HL7 v2 sample: the output contract, and profile conformance of every
Bundle written (zero profcheck errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TESTDATA, profile_errors

ENGINE = [sys.executable, "-m", "engine"]
HL7_DIRS = sorted(TESTDATA.glob("hl7v2-*"))


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("map-out")
    proc = subprocess.run(
        [*ENGINE, "map", "--model", "document", "--out", str(out), *map(str, HL7_DIRS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, out


def test_contract_summary_and_exit_code(mapped: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = mapped
    assert proc.returncode == 1, proc.stderr[-2000:]  # the junk frames of the listener logs are rejected
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    bundles = sorted(p for p in out.glob("*.json") if p.name != "summary.json")
    assert summary["bundles"] == len(bundles) > 800
    assert summary["outputs"] >= summary["bundles"]  # bundles counts distinct Bundle ids
    # Every message is accounted for: converted, filtered (not a report), a duplicate, or rejected.
    filtered = sum(summary["filtered"].values())
    assert summary["inputs"] >= len(summary["rejected"]) + filtered + summary["duplicates"] + 850
    assert summary["duplicates"] >= 1  # the scout bulk feed and logs repeat messages byte for byte
    for path in bundles:
        assert json.loads(path.read_bytes())["id"] == path.stem  # named by the Bundle's deterministic id
    rejected_files = list((out / "rejected").iterdir())
    assert len(rejected_files) == len(summary["rejected"])
    stderr_lines = [line for line in proc.stderr.splitlines() if line.startswith("rejected ")]
    assert len(stderr_lines) == len(summary["rejected"])
    # Lab results, orders and status-only ORUs are filtered (counted by reason), never dead letters.
    reasons = set(summary["filtered"])
    assert any("OMI^O23 is not ORU^R01" in r for r in reasons)
    assert summary["filtered"]["laboratory result (specimen or lab service section), not an imaging report"] == 4
    assert any(r.startswith("not an imaging report") for r in reasons)
    assert any(r.startswith("no report content") for r in reasons)
    # Only garbage is rejected here: log frames without a message.
    for r in summary["rejected"]:
        assert r["reason"] in ("not an HL7 v2 message (no MSH segment) and not DICOM", "empty message"), r
        assert "raw-logs" in r["input"]


def test_every_bundle_conforms(mapped: tuple[subprocess.CompletedProcess[str], Path], fhir_validator: Any) -> None:
    _, out = mapped
    failures: dict[str, list[str]] = {}
    kinds: dict[str, int] = {}
    for path in sorted(out.glob("*.json")):
        if path.name == "summary.json":
            continue
        bundle = json.loads(path.read_bytes())
        kinds[bundle["type"]] = kinds.get(bundle["type"], 0) + 1
        errors = profile_errors(fhir_validator, bundle)
        if errors:
            failures[path.name] = errors[:3]
    assert not failures, json.dumps(dict(list(failures.items())[:5]), indent=1)
    assert kinds["document"] > 400 and kinds["collection"] > 400


def test_same_input_byte_identical(tmp_path: Path) -> None:
    src = TESTDATA / "hl7v2-washu-scout" / "messages"
    outs = []
    for n in range(2):
        out = tmp_path / f"o{n}"
        subprocess.run([*ENGINE, "map", "--out", str(out), str(src)], capture_output=True, timeout=120)
        outs.append({p.name: p.read_bytes() for p in out.glob("*.json")})
    assert outs[0] == outs[1] and len(outs[0]) > 20


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([*ENGINE, "map", "--out", str(tmp_path), str(tmp_path / "missing")], capture_output=True)
    assert proc.returncode == 2
    proc = subprocess.run([*ENGINE, "map"], capture_output=True)
    assert proc.returncode == 2
    proc = subprocess.run([*ENGINE, "map", "--model", "nope", str(tmp_path)], capture_output=True)
    assert proc.returncode == 2


def test_clean_input_exits_0(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *ENGINE,
            "map",
            "--out",
            str(tmp_path),
            str(TESTDATA / "hl7v2-washu-scout/messages/scout-13-v2.7-Final-20250814-22.hl7"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: summary[k] for k in ("inputs", "bundles", "outputs", "duplicates", "filtered", "rejected")} == {
        "inputs": 1, "bundles": 1, "outputs": 1, "duplicates": 0, "filtered": {}, "rejected": []
    }  # fmt: skip


def _bulk_expectations(path: Path) -> tuple[int, int, int, int]:
    """Counted from the raw feed with python-hl7, independently of the engine: (messages, messages without
    any OBX, distinct report versions, exact byte-for-byte repeats of an earlier message). A version is what the
    Bundle id stands for: sender (MSH-4), report
    (filler number ORC-3, else OBR-3, else OBR-2), status (OBR-25), time (OBR-22, else MSH-7), content (each
    OBX's type, id, value, status) and patient (PID-2/3/4); a resend (another MSH-10 only) is the same."""
    import hl7

    def fld(seg: Any, n: int) -> str:
        return str(seg[n]) if len(seg) > n else ""

    messages = hl7.split_file(path.read_bytes().decode("latin-1"))
    versions, empty = set(), 0
    for text in messages:
        segs: dict[str, list[Any]] = {}
        for seg in hl7.parse(text):
            segs.setdefault(str(seg[0]), []).append(seg)
        obx = tuple((fld(s, 2), fld(s, 3), fld(s, 5), fld(s, 11)) for s in segs.get("OBX", []))
        if not obx:
            empty += 1
            continue
        msh, obr, pid = segs["MSH"][0], segs["OBR"][0], segs["PID"][0]
        filler = (fld(segs["ORC"][0], 3) if "ORC" in segs else "") or fld(obr, 3) or fld(obr, 2)
        patient = (fld(pid, 2), fld(pid, 3), fld(pid, 4))
        versions.add((fld(msh, 4), filler, fld(obr, 25), fld(obr, 22) or fld(msh, 7), obx, patient))
    return len(messages), empty, len(versions), len(messages) - len(set(messages))


def test_bulk_feed_counts(tmp_path: Path) -> None:
    """The bulk feed: every message counted, the ORUs without any report content (status-only notifications)
    filtered, exact byte-for-byte repeats counted as duplicates, one Bundle per distinct report version (a resend of
    the same version under another control id overwrites)."""
    bulk = TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"
    messages, empty, versions, duplicates = _bulk_expectations(bulk)
    # the feed as shipped: 850 reports in 848 versions (one exact repeat, one resend under another control id)
    assert (messages, empty, versions, duplicates) == (900, 50, 848, 1)
    proc = subprocess.run(
        [*ENGINE, "map", "--quiet", "--out", str(tmp_path), str(bulk)], capture_output=True, timeout=120
    )
    assert proc.returncode == 0  # status-only ORUs are filtered, not rejected
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["inputs"] == messages
    assert summary["rejected"] == []
    assert summary["filtered"] == {"no report content: no text, coded finding or document in any OBX": empty}
    assert summary["duplicates"] == duplicates
    written = [p for p in tmp_path.glob("*.json") if p.name != "summary.json"]
    assert summary["bundles"] == len(written) == versions
