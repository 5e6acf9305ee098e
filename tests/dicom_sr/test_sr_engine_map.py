"""Every shared DICOM SR sample through the real ``engine map`` command: one conformant Bundle per
report-bearing file (zero profcheck errors), a one-line reason for every other file (filtered when it is not
a report, rejected when it cannot be read)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, profile_errors
from tests.dicom_sr.helpers import REJECTED, SR_DIRS, SR_FILES

ENGINE = Path(sys.executable).parent / "engine"


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("sr-map")
    proc = subprocess.run(
        [str(ENGINE), "map", "--model", "document", "--out", str(out), *map(str, SR_DIRS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, out


def _summary(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return doc


def test_exit_code_and_outcomes(mapped: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = mapped
    assert "Traceback" not in proc.stderr
    summary = _summary(out)
    rejected = {Path(r["input"].rsplit("#", 1)[0]).name: r["reason"] for r in summary["rejected"]}
    assert proc.returncode == (1 if rejected else 0), proc.stderr
    assert not {n for n in rejected if n.endswith(".dcm")}, "a DICOM SR sample was dead-lettered"
    for fragment in REJECTED.values():  # non-report objects: filtered, counted by reason
        assert any(fragment in reason for reason in summary["filtered"]), (fragment, summary["filtered"])
    assert sum(summary["filtered"].values()) >= len(REJECTED)
    for reason in [*rejected.values(), *summary["filtered"]]:
        assert "\n" not in reason and reason.strip()
    for line in proc.stderr.splitlines():
        if line.startswith("rejected "):
            assert ": " in line


def test_one_bundle_per_report_file(mapped: tuple[subprocess.CompletedProcess[str], Path], converter: Any) -> None:
    """Each report-bearing file gives exactly one Bundle; the output folder holds exactly those Bundles
    (reportsi.dcm and reportsi_with_empty_number_tags.dcm are the same SOP instance: one Bundle id)."""
    _, out = mapped
    expected = set()
    for path in SR_FILES:
        result = converter.convert(path.read_bytes())
        if path.name in REJECTED:
            assert not result.outputs and not result.rejections and len(result.filtered) == 1, path.name
        else:
            assert len(result.outputs) == 1 and not result.rejections, (path.name, result.rejections)
            expected.add(result.outputs[0].bundle_id)
    written = {p.stem for p in out.glob("*.json") if p.name != "summary.json"}
    assert expected <= written
    assert len(written - expected) <= 1  # the DICOM JSON sample, if the dispatcher routes DICOM JSON
    assert _summary(out)["bundles"] == len(written)


def test_every_output_conforms(mapped: tuple[subprocess.CompletedProcess[str], Path], fhir_validator: Any) -> None:
    _, out = mapped
    failures = {}
    for path in sorted(out.glob("*.json")):
        if path.name == "summary.json":
            continue
        bundle = json.loads(path.read_bytes())
        errors = profile_errors(fhir_validator, bundle)
        if errors:
            failures[path.name] = errors[:5]
        for entry in bundle["entry"]:
            profiles = entry["resource"].get("meta", {}).get("profile", [])
            assert any(
                p.startswith(("http://hl7.eu/fhir/imaging-r5/", "http://hl7.eu/fhir/base-r5/")) for p in profiles
            ), (
                path.name,
                entry["resource"]["resourceType"],
            )
    assert not failures, failures


def test_cli_matches_converter(mapped: tuple[subprocess.CompletedProcess[str], Path], converter: Any) -> None:
    """Output.body is exactly what engine map writes (and converting twice gives the same bytes)."""
    _, out = mapped
    for path in SR_FILES:
        first = converter.convert(path.read_bytes())
        second = converter.convert(path.read_bytes())
        assert [o.body for o in first.outputs] == [o.body for o in second.outputs], path.name
        for o in first.outputs:
            assert (out / f"{o.bundle_id}.json").read_bytes() == o.body, path.name
