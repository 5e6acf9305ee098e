"""The official HL7 validator (../shared/tools/fhir-validator/validate.sh, EU Imaging R5 loaded) over the transaction
models, in the suite's one validator run (tests/conformance/official.py ``register``), zero unwaived errors:

* ``models-synthetic``: harmonized and IMR Bundles of every kind of entry (conditional creates/updates, PUT by id,
  Provenance, JSON Patch Binaries, IMR DiagnosticReport/ImagingSelection/Endpoint) from the synthetic ORU family
  (final, status-only, cancel, OBX-11 U, addendum) and the HL7 SR IG measurement report;
* ``models-shared``: what ``engine map --model rest|harmonized|imr`` writes for a representative subset of the
  shared test data (HL7 v2 feeds, DICOM SR sets, the field reports; for ``imr`` most shared inputs are rejected
  with ModelRequirement for lack of participant identifiers, which is expected).

The full shared test data is run by hand (README, "Harmonized resources and IHE IMR")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.output.imr import ImrOptions, shape_imr
from tests.conformance.official import register
from tests.conftest import ROOT, TESTDATA
from tests.models.helpers import convert, sr_bytes
from tests.models.oru_factory import oru
from tests.models.test_imr import WADO, sr_report

#: one or two folders of each kind of source: HL7 v2 dialects, DICOM SR producers, the field reports
SHARED_SUBSET = ("hl7v2-dcm4che", "hl7v2-hapi", "hl7v2-linuxforhealth", "dicom-sr-hl7-ig", "dicom-sr-dcm4che",
                 "dicom-sr-highdicom", "field-reports")
MODELS = ("rest", "harmonized", "imr")


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


def _map_shared(folder: Path) -> None:
    for model in MODELS:
        for name in SHARED_SUBSET:
            out = folder / model / name
            proc = subprocess.run(
                [sys.executable, "-m", "engine", "map", "--model", model, "--quiet", "--out", str(out),
                 str(TESTDATA / name)], capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
            if proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
                raise AssertionError(f"engine map --model {model} {name}: {proc.returncode}: {proc.stderr[-2000:]}")


register("models-synthetic", _outputs)
register("models-shared", _map_shared)


def test_synthetic_harmonized_and_imr_bundles_conform(official_validation: Any) -> None:
    report = official_validation.group("models-synthetic")
    assert len(report) == 8  # six harmonized inputs, the IMR Bundles of the ORU and of the SR
    assert not official_validation.errors_in(report), official_validation.describe(report)


def test_engine_map_rest_harmonized_imr_of_shared_inputs_conform(official_validation: Any) -> None:
    report = official_validation.group("models-shared")
    per_model = {m: [f for f in report if f"/{m}/" in str(f)] for m in MODELS}
    assert all(per_model.values()), {m: len(f) for m, f in per_model.items()}  # every model wrote Bundles
    assert not official_validation.errors_in(report), official_validation.describe(report)
