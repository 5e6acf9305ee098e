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
    assert proc.returncode == 1, proc.stderr[-2000:]  # lab results and non-ORU messages are rejected
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    bundles = sorted(p for p in out.glob("*.json") if p.name != "summary.json")
    assert summary["bundles"] == len(bundles) > 800
    # Every message is accounted for: written (some feeds repeat a message, some carry two reports) or rejected.
    assert summary["inputs"] >= len(summary["rejected"]) + 850
    for path in bundles:
        assert json.loads(path.read_bytes())["id"] == path.stem  # named by the Bundle's deterministic id
    rejected_files = list((out / "rejected").iterdir())
    assert len(rejected_files) == len(summary["rejected"])
    stderr_lines = [line for line in proc.stderr.splitlines() if line.startswith("rejected ")]
    assert len(stderr_lines) == len(summary["rejected"])
    reasons = {r["input"].split("/")[-1]: r["reason"] for r in summary["rejected"]}
    assert "not ORU^R01" in reasons["OMI_O23-ImagingOrder.hl7#1"]
    for lab in ("LAB-ORU-1.hl7#1", "LAB-ORU-2.hl7#1", "LRI_2.0-NG_CBC_Typ_Message.hl7#1", "ORU-R01-01.hl7#1"):
        assert reasons[lab].startswith("laboratory result")
    assert reasons["ORU-R01-RMGEAD.hl7#1"].startswith("not an imaging report")
    # Only non-report messages are rejected: every rejection is one of these reasons.
    allowed = ("not ORU^R01", "laboratory result", "not an imaging report", "no report content",
               "not an HL7 v2 message", "empty message")  # fmt: skip
    for r in summary["rejected"]:
        assert any(a in r["reason"] for a in allowed), r


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
    assert json.loads((tmp_path / "summary.json").read_text()) == {"inputs": 1, "bundles": 1, "rejected": []}


def _bulk_expectations(path: Path) -> tuple[int, int, int]:
    """Counted from the raw feed with python-hl7, independently of the engine: (messages, messages without
    any OBX, distinct report versions). A version is what the Bundle id stands for: sender (MSH-4), report
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
    return len(messages), empty, len(versions)


def test_bulk_feed_counts(tmp_path: Path) -> None:
    """The bulk feed: every message counted, the ORUs without any report content (status-only notifications)
    rejected, one Bundle per distinct report version (exact resends overwrite)."""
    bulk = TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"
    messages, empty, versions = _bulk_expectations(bulk)
    assert (messages, empty, versions) == (900, 50, 848)  # the feed as shipped: 850 reports, 2 exact resends
    proc = subprocess.run(
        [*ENGINE, "map", "--quiet", "--out", str(tmp_path), str(bulk)], capture_output=True, timeout=120
    )
    assert proc.returncode == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["inputs"] == messages
    assert len(summary["rejected"]) == empty
    assert {r["reason"] for r in summary["rejected"]} == {
        "no report content: no text, coded finding or document in any OBX"
    }
    written = [p for p in tmp_path.glob("*.json") if p.name != "summary.json"]
    assert summary["bundles"] == len(written) == versions
