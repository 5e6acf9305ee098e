"""The official HL7 validator (../shared/tools/fhir-validator/validate.sh, EU Imaging R5 loaded) over harmonized and
IMR transaction Bundles: every kind of entry (conditional creates/updates, PUT by id, Provenance, JSON Patch
Binaries, IMR DiagnosticReport/ImagingSelection/Endpoint) with zero unwaived errors. One JVM for all files.

The inputs are the synthetic ORU family (final, status-only, cancel, OBX-11 U, addendum) and the HL7 SR IG
measurement report; the full shared test data is run by hand (README, "Harmonized resources and IHE IMR")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.output.imr import ImrOptions, shape_imr
from tests.conftest import SHARED
from tests.models.helpers import convert, sr_bytes
from tests.models.oru_factory import oru
from tests.models.test_imr import WADO, sr_report

VALIDATE = SHARED / "tools" / "fhir-validator" / "validate.sh"


def _outputs(folder: Path) -> None:
    inputs = {
        "final": oru(),
        "status-only": oru(text=None, impression=None, obr25="X"),
        "cancel": oru(obr25="X"),
        "status-u": oru(obr25="", obx11="U"),
        "addendum": oru(obr25="B", text="Addendum: stable."),
        "sr": sr_bytes(),
    }
    for name, data in inputs.items():
        for i, bundle in enumerate(convert(data, "harmonized")):
            (folder / f"harmonized-{name}-{i}.json").write_text(json.dumps(bundle), encoding="utf-8")
    for i, bundle in enumerate(convert(oru(), "imr")):
        (folder / f"imr-oru-{i}.json").write_text(json.dumps(bundle), encoding="utf-8")
    imr_sr = shape_imr(sr_report(), ImrOptions(wado_rs={"TH": WADO}))
    (folder / "imr-sr.json").write_text(json.dumps(imr_sr), encoding="utf-8")


def test_official_validator_zero_errors(tmp_path: Path) -> None:
    if not VALIDATE.is_file() or shutil.which("java") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("official FHIR validator unavailable under CI")
        pytest.skip("official FHIR validator unavailable")
    _outputs(tmp_path)
    report = tmp_path / "report.json"
    files = sorted(str(p) for p in tmp_path.glob("*.json"))
    proc = subprocess.run(
        [str(VALIDATE), "--json", str(report), *files], capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    results = json.loads(report.read_text(encoding="utf-8"))
    assert len(results) == len(files)
    errors = {Path(r["file"]).name: [f"{e['path']}: {e['message']}" for e in r["errors"]] for r in results}
    assert not any(errors.values()), {k: v for k, v in errors.items() if v}
