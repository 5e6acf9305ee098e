"""The official HL7 FHIR validator over every Bundle ``engine map`` makes from the shared inputs: zero unwaived
errors (issue 8). One JVM run for the whole session (the ``official_validation`` fixture, which also validates
the Bundles other tests register); profcheck stays the fast check in the other tests.

The run takes minutes (JVM start-up 20-50 s, then ~0.4 s per Bundle on 2 cores): hence the timeout below."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.official import FileReport, register
from tests.conftest import TESTDATA

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2700)]

BROKEN = "validator-self-check"


def _broken_bundle(out: Path) -> None:
    """A control: a conformant SR Bundle with one defect (DiagnosticReport.status outside its required value
    set). The validator must report it, or a run that checks nothing would pass."""
    from engine.cmd_map import load_mapping_context
    from engine.convert import Converter

    data = (TESTDATA / "field-reports" / "17-sr-item-level-charset-latin1-in-utf8.dcm").read_bytes()
    bundle = json.loads(Converter(load_mapping_context(None)).convert(data).outputs[0].body)
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    report["status"] = "approved-by-nobody"
    (out / "broken-status.json").write_text(json.dumps(bundle))


register(BROKEN, _broken_bundle)


def _of_kind(reports: dict[Path, FileReport], prefix: str) -> dict[Path, FileReport]:
    return {p: r for p, r in reports.items() if p.parent.name.startswith(prefix)}


@pytest.mark.parametrize("kind", ["dicom-sr-", "hl7v2-", "field-reports"])
def test_zero_unwaived_errors(official_validation: Any, kind: str) -> None:
    reports = _of_kind(official_validation.group("shared-testdata"), kind)
    summaries = {name: s for name, s in official_validation.summaries.items() if name.startswith(kind)}
    validated = Counter(p.parent.name for p in reports)
    assert summaries and sum(validated.values()) > 0, f"no {kind}* Bundles were validated"
    for name, summary in summaries.items():  # every Bundle written (a resend overwrites its file) was validated
        assert (validated[name] > 0) == (summary["bundles"] > 0) and validated[name] <= summary["bundles"], name
    assert not official_validation.errors_in(reports), official_validation.describe(reports)


def test_the_validator_sees_a_defect(official_validation: Any) -> None:
    (report,) = official_validation.group(BROKEN).values()
    messages = " ".join(e["message"] for e in report.errors)
    assert "approved-by-nobody" in messages, report
