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
                {"path": "Bundle.entry[2].resource", "message": "Unknown code 'MRN' in the CodeSystem 'x'"},
                {"path": "Bundle.entry[0].resource", "message": f"No match for urn:uuid:0000-{n:04d} in [{n}]"},
            ),
        )
        for n in range(30)
    }
    reports[tmp_path / "dicom-sr-y" / "ok.json"] = FileReport(file=tmp_path / "dicom-sr-y" / "ok.json", errors=())
    text = run.describe(reports, cap=5)
    assert text.splitlines()[0] == "60 unwaived errors in 30 of 31 files; by kind (errors / files):"
    assert "  30 / 30  Unknown code 'MRN' in the CodeSystem 'x'" in text
    assert "  30 / 30  No match for urn:uuid:… in [n]" in text
    assert "hl7v2-x/0.json: Bundle.entry[2].resource: Unknown code 'MRN'" in text
    assert text.endswith("... 55 more")
    assert run.errors_in(reports) == 60


def test_kinds_ignore_instance_ids() -> None:
    kind = official._kind
    a = "Unable to find a profile match for urn:uuid:3fb2146f-e304-5abd-a570-18caffd37d4a among choices: X"
    b = "Unable to find a profile match for urn:uuid:d58ccd2f-862d-5812-bd57-514de7717132 among choices: X"
    assert kind(a) == kind(b) == "Unable to find a profile match for urn:uuid:… among choices: X"
    assert kind("Slice 'Bundle.entry:Patient': a matching slice is required") != kind(
        "Slice 'Bundle.entry:ImagingStudy': a matching slice is required"
    )
