"""The validator harness itself, without a JVM: a missing validator fails under CI and skips elsewhere; the
failure listing groups errors by kind and is capped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import official
from tests.conformance.official import FileReport, OfficialValidation


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_validator_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(official, "VALIDATE", tmp_path / "no-such-validate.sh")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="official FHIR validator not found"):
        official.require_validator()
    with pytest.raises(outcome):
        official.session_validation(tmp_path)


def test_describe_groups_by_kind_and_caps(tmp_path: Path) -> None:
    run = OfficialValidation(tmp_path)
    reports = {
        tmp_path / "hl7v2-x" / f"{n}.json": FileReport(
            file=tmp_path / "hl7v2-x" / f"{n}.json",
            errors=(
                {"path": "Bundle.entry[2].resource", "message": f"Unknown code 'MRN{n}' in the CodeSystem 'x'"},
                {"path": "Bundle.entry[0].resource", "message": "Not a valid date/time format: '2024-01-01T10:00'"},
            ),
        )
        for n in range(30)
    }
    reports[tmp_path / "dicom-sr-y" / "ok.json"] = FileReport(file=tmp_path / "dicom-sr-y" / "ok.json", errors=())
    text = run.describe(reports, cap=5)
    assert text.splitlines()[0] == "60 unwaived errors in 30 of 31 files; by kind (errors / files):"
    assert "  30 / 30  Unknown code '…' in the CodeSystem '…'" in text
    assert "  30 / 30  Not a valid date/time format: '…'" in text
    assert "hl7v2-x/0.json: Bundle.entry[2].resource: Unknown code 'MRN0'" in text
    assert text.endswith("... 55 more")
    assert run.errors_in(reports) == 60
