"""Golden comparison of the TID 1500 measurement mapping with the HL7 DICOM SR IG's own FHIR rendering.

Input: ``testdata/dicom-sr-hl7-ig/Example-MeasurementReport.json`` (the IG's sample SR, DICOM JSON).
Expected: ``fhir-ig/hl7-dicom-sr/examples/*.json``. Facts are compared (codes, values, units, finding
site, tracking identifiers, selections), not whole JSON: ids, references and our EU profiles differ.
Where the IG examples disagree with their own DICOM input (Volume and Diameter values are both
6705.5499 in the examples, the finding site is "Left lung structure" there but "Lung" in the SR), the
DICOM input is the truth and the test says so.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipelines.context import MappingContext
from pipelines.dicom_sr import map_dicom
from pipelines.output import shape
from tests.conftest import SHARED, TESTDATA, profile_errors
from tests.dicom_sr.helpers import by_type, one

EXAMPLES = SHARED / "fhir-ig" / "hl7-dicom-sr" / "examples"
SOURCE = TESTDATA / "dicom-sr-hl7-ig" / "Example-MeasurementReport.json"
DICOMSR = "http://hl7.org/fhir/uv/dicom-sr/StructureDefinition/"


def _example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return doc


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    reports = map_dicom(SOURCE.read_bytes(), MappingContext())
    assert len(reports) == 1
    out, kind = shape(reports[0])
    assert kind == "document"
    return out


def _with_profile(b: dict[str, Any], rtype: str, profile: str) -> list[dict[str, Any]]:
    return [r for r in by_type(b, rtype) if DICOMSR + profile in r["meta"]["profile"]]


def _coding(cc: dict[str, Any]) -> tuple[str, str]:
    c = cc["coding"][0]
    return c.get("system", ""), c["code"]


def _index(b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["fullUrl"]: e["resource"] for e in b["entry"]}


def test_conforms(bundle: dict[str, Any], fhir_validator: Any) -> None:
    assert profile_errors(fhir_validator, bundle) == []


def test_measurement_group(bundle: dict[str, Any]) -> None:
    expected = _example("Observation-imaging-measurement-group.json")
    (group,) = _with_profile(bundle, "Observation", "imaging-measurement-group")
    assert _coding(group["code"]) == _coding(expected["code"])  # SCT 241053004 (Finding Category)
    assert _coding(group["valueCodeableConcept"]) == _coding(expected["valueCodeableConcept"])  # SCT 427359005
    assert _coding(group["category"][0]) == _coding(expected["category"][0])  # DCM 125007
    assert group["status"] == expected["status"] == "final"  # COMPLETE + VERIFIED
    assert group["issued"].startswith("2019-03-23T08:24:28")
    assert len(group["hasMember"]) == len(expected["hasMember"]) == 5
    # tracking identifiers: in the IG on the BodyStructure, here typed identifiers on the group
    site = _example("BodyStructure-measurement-report-finding-site.json")
    expected_ids = {i["type"]["coding"][0]["code"]: i["value"] for i in site["identifier"]}
    ours = {i["type"]["coding"][0]["code"]: i["value"] for i in group["identifier"]}
    assert ours["112039"] == expected_ids["112039"] == "Nodule 1"
    assert ours["112040"] == expected_ids["112040"]
    assert group["identifier"][1]["system"] == "urn:dicom:uid"
    # finding site: the SR says SCT 39607008 Lung (the IG example's BodyStructure says 44029006)
    assert _coding(group["bodySite"]) == ("http://snomed.info/sct", "39607008")
    assert group["partOf"][0]["identifier"]["value"] == "urn:oid:1.2.840.113747.20080222.83311413144566317081790268995"


def test_measurements(bundle: dict[str, Any]) -> None:
    (group,) = _with_profile(bundle, "Observation", "imaging-measurement-group")
    index = _index(bundle)
    members = [index[r["reference"]] for r in group["hasMember"]]
    ours = {_coding(m["code"]): m["valueQuantity"] for m in members if "valueQuantity" in m}
    for n, dicom_value in (("001", 31112.2), ("002", 49.94462), ("003", 9026.567)):
        expected = _example(f"Observation-imaging-measurement-{n}.json")
        q = ours[_coding(expected["code"])]
        assert (q["system"], q["code"]) == (expected["valueQuantity"]["system"], expected["valueQuantity"]["code"])
        assert q["value"] == dicom_value
        if n == "003":
            assert q["value"] == expected["valueQuantity"]["value"]
    algorithm = _example("Device-measurement-report-algorithm.json")
    for m in members:
        assert m["partOf"] == group["partOf"]
        assert m["basedOn"][0]["identifier"]["value"] == "ACSN-235813"
        if "valueQuantity" in m:  # TID 4019 pylidc 0.2.0 -> AlgorithmIdentification Device, parent = equipment
            device = index[m["device"]["reference"]]
            assert device["displayName"] == algorithm["displayName"] == "pylidc"
            assert device["version"] == algorithm["version"]
            assert device["parent"] == group["device"]
            assert DICOMSR + "algorithm-identification" in device["meta"]["profile"]
        else:
            assert m["device"] == group["device"]
    equipment = index[group["device"]["reference"]]
    assert equipment["manufacturer"] == _example("Device-measurement-report-general-equipment.json")["manufacturer"]


def test_qualitative_evaluations(bundle: dict[str, Any]) -> None:
    ours = {
        _coding(o["code"])[1]: o["valueCodeableConcept"]["coding"][0]["code"]
        for o in _with_profile(bundle, "Observation", "imaging-qualitative-evaluation")
    }
    for n in ("001", "002"):
        expected = _example(f"Observation-qualitative-evaluation-{n}.json")
        assert ours[expected["code"]["coding"][0]["code"]] == expected["valueCodeableConcept"]["coding"][0]["code"]


def test_referenced_segment_and_source(bundle: dict[str, Any]) -> None:
    expected = _example("ImagingSelection-measurement-report-referenced-segment.json")
    (seg,) = _with_profile(bundle, "ImagingSelection", "referenced-segment")
    # the IG example's SEG UID (66 characters, not a valid UID) differs from its DICOM input in the middle
    assert seg["instance"][0]["uid"] == "1.2.840.113747.20080222.83311413144566317081790268995.2.1"
    assert expected["instance"][0]["uid"].endswith(".2.1")
    assert seg["instance"][0]["sopClass"] == expected["instance"][0]["sopClass"]
    assert seg["instance"][0]["subset"] == expected["instance"][0]["subset"] == ["1"]
    assert seg["studyUid"] == "1.2.840.113747.20080222.83311413144566317081790268995"
    (group,) = _with_profile(bundle, "Observation", "imaging-measurement-group")
    sources = [_index(bundle)[r["reference"]] for r in group["derivedFrom"]]
    assert seg in sources
    doc = next(s for s in sources if s is not seg)
    assert doc["instance"][0]["uid"] == "1.2.840.113747.20080222.83311413144566317081790268995.1.1"
    assert doc["seriesUid"] == "1.2.840.113747.20080222.83311413144566317081790268995.1"


def test_accession_patient_and_study(bundle: dict[str, Any]) -> None:
    sr = one(bundle, "ServiceRequest")
    expected = _example("ServiceRequest-measurement-report-service-request.json")
    assert sr["identifier"][0]["system"] == expected["identifier"][0]["system"]  # Issuer of Accession Number
    assert sr["identifier"][0]["value"] == expected["identifier"][0]["value"]
    study = one(bundle, "ImagingStudy")
    assert (
        study["identifier"][0]["value"]
        == _example("ImagingStudy-measurement-report-imaging-study.json")["identifier"][0]["value"]
    )
    assert one(bundle, "Patient")["identifier"][0]["value"] == "PID-11235"
    # Issuer of Patient ID "Test Hospital"; its Universal Entity ID "test-hospital.org" is not a URI
    assert one(bundle, "Patient")["identifier"][0]["system"] == "urn:imaging-engine:sid/Test-Hospital/patient-id"
