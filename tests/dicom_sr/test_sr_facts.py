"""Fact assertions per kind of SR: narrative (TID 2000), measurements (TID 1500), dose (RDSR / Enhanced SR)
and encapsulated PDF. Each file goes through the real Converter (session fixture ``sr_bundles``)."""

from __future__ import annotations

import base64
from typing import Any

from pipelines.dicom_sr.dose import NOT_PATIENT_DOSE
from tests.dicom_sr.helpers import by_type, one

Bundle = dict[str, Any]
LOINC = "http://loinc.org"
IM = "http://hl7.eu/fhir/imaging-r5/StructureDefinition/"


def _section(bundle: Bundle, code: str) -> dict[str, Any]:
    comp = one(bundle, "Composition")
    return next(s for s in comp["section"] if s["code"]["coding"][0]["code"] == code)


def _note(section: dict[str, Any]) -> str:
    return "\n".join(e["valueAnnotation"]["text"] for e in section.get("extension", []))


def _ref_targets(bundle: Bundle, refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    index = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    return [index[r["reference"]] for r in refs]


def _study_uid(bundle: Bundle) -> str:
    value: str = one(bundle, "ImagingStudy")["identifier"][0]["value"]
    return value


def test_basic_text_latin2_narrative(sr_bundle: Any) -> None:
    b = sr_bundle("MarekLatin2.dcm")
    assert b["type"] == "document"
    patient = one(b, "Patient")
    assert patient["identifier"][0]["value"] == "P22"
    assert patient["name"][0]["family"] == "Testowy" and patient["birthDate"] == "1945-06-30"
    assert _study_uid(b) == "urn:oid:1.2.826.0.1.3680043.2.15698796759233767756630698199"
    sr = one(b, "ServiceRequest")
    assert sr["identifier"][0]["value"] == "73"
    assert sr["identifier"][0]["type"]["coding"][0]["code"] == "ACSN"
    dr, comp = one(b, "DiagnosticReport"), one(b, "Composition")
    assert dr["basedOn"][0]["identifier"]["value"] == "73"
    assert dr["status"] == comp["status"] == "partial"  # PARTIAL + UNVERIFIED
    assert dr["identifier"][0]["system"] == "urn:dicom:uid" and dr["identifier"][0]["value"].startswith("urn:oid:1.")
    assert "11528-7" in [c["code"] for c in comp["type"]["coding"]]
    assert "dgtfhglhghk dgtfhglhghk dgtfhglhghk" in _note(_section(b, "59776-5"))
    assert "Procedure reported: iodsa" in _note(_section(b, "55111-9"))


def test_latin2_decoded_in_content_tree() -> None:
    from pipelines.dicom_sr.reader import read_dataset, walk
    from tests.dicom_sr.helpers import file

    root = walk(read_dataset(file("MarekLatin2.dcm").read_bytes()))
    meanings = {i.name.meaning for i in root if i.name}
    assert "Oddział" in meanings and "Język treści" in meanings


def test_enhanced_sr_running_text_and_num(sr_bundle: Any) -> None:
    b = sr_bundle("report_dfl.dcm")  # Deflated Explicit VR Little Endian
    text = _note(_section(b, "59776-5"))
    assert (
        "This 78-year-old gentleman referred by Dr. Fukuda was also seen by Dr. Mason at the Redlands Clinic." in text
    )
    diameters = [o for o in by_type(b, "Observation") if o["code"]["coding"][0].get("display") == "Diameter"]
    assert diameters and diameters[0]["valueQuantity"]["value"] == 1.5
    assert one(b, "DiagnosticReport")["status"] == "partial"
    assert one(b, "Composition")["author"], "observer name becomes the author"


def test_comprehensive_sr_status_predecessor_and_key_image(sr_bundle: Any) -> None:
    b = sr_bundle("test-SR.dcm")
    dr, comp = one(b, "DiagnosticReport"), one(b, "Composition")
    assert dr["status"] == comp["status"] == "corrected"  # COMPLETE + VERIFIED with a predecessor
    assert comp["relatesTo"][0]["type"] == "replaces"
    assert comp["relatesTo"][0]["resourceReference"]["identifier"]["system"] == "urn:dicom:uid"
    assert comp["attester"][0]["time"] and comp["attester"][0]["mode"]["coding"][0]["code"] == "legal"
    assert dr["resultsInterpreter"]
    keys = [
        s for s in by_type(b, "ImagingSelection") if IM + "ImagingSelectionKeyImageEuImaging" in s["meta"]["profile"]
    ]
    assert len(keys) == 1
    assert keys[0]["instance"][0]["uid"] == "1.2.3.4.5.0" and keys[0]["instance"][0]["subset"] == ["5", "2"]
    assert keys[0]["instance"][0]["sopClass"] == {
        "system": "urn:ietf:rfc:3986",
        "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
    }
    assert {"reference": next(e["fullUrl"] for e in b["entry"] if e["resource"] is keys[0])} in _section(b, "59776-5")[
        "entry"
    ]
    assert "A mass of 3 cm was detected." in _note(_section(b, "59776-5"))


def _groups(b: Bundle) -> list[dict[str, Any]]:
    return [
        o
        for o in by_type(b, "Observation")
        if "http://hl7.org/fhir/uv/dicom-sr/StructureDefinition/imaging-measurement-group" in o["meta"]["profile"]
    ]


def _ident(res: dict[str, Any], code: str) -> str | None:
    for i in res.get("identifier", []):
        if i["type"]["coding"][0]["code"] == code:
            value: str = i["value"]
            return value
    return None


def test_tid1500_measurement_groups(sr_bundle: Any) -> None:
    b = sr_bundle("sr_document_with_multiple_groups.dcm")
    groups = _groups(b)
    assert [_ident(g, "112039") for g in groups] == ["Image0001", "LungNodule0001", "Aorta0001", "Vertebra0001"]
    nodule = groups[1]
    assert nodule["code"]["coding"][0]["code"] == "49755003"  # Finding category
    assert nodule["valueCodeableConcept"]["coding"][0]["code"] == "27925004"
    assert nodule["bodySite"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "39607008",
        "display": "Lung",
    }
    assert _ident(nodule, "112040") == "urn:oid:1.2.826.0.1.3680043.10.511.3.11998155355995483197548907108234588"
    members = _ref_targets(b, nodule["hasMember"])
    diameter = next(m for m in members if m["code"]["coding"][0]["code"] == "81827009")
    assert diameter["valueQuantity"] == {
        "value": 10.0,
        "unit": "mm",
        "system": "http://unitsofmeasure.org",
        "code": "mm",
    }
    regions = [s for s in _ref_targets(b, nodule["derivedFrom"]) if s["code"]["coding"][0]["code"] == "111030"]
    assert regions[0]["instance"][0]["imageRegion2D"] == [
        {"regionType": "circle", "coordinate": [45.0, 55.0, 45.0, 65.0]}
    ]
    assert regions[0]["instance"][0]["uid"] == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    vertebra = _ref_targets(b, groups[3]["hasMember"])
    assert vertebra[0]["valueQuantity"]["value"] == 200.0 and vertebra[0]["valueQuantity"]["code"] == "mm3"
    dr = one(b, "DiagnosticReport")
    result = {r["reference"] for r in dr["result"]}
    section = {r["reference"] for r in _section(b, "59776-5")["entry"]}
    assert section <= result  # dgr-1
    text = _note(_section(b, "59776-5"))
    assert "Measurement group 2: Nodule (tracking id LungNodule0001; finding site Lung)" in text
    assert "- Diameter: 10.0 mm" in text
    assert dr["status"] == "preliminary"  # Preliminary Flag PRELIMINARY


def test_tid1500_segment_and_derivation(sr_bundle: Any) -> None:
    b = sr_bundle("sr.dcm")  # dcmqi PET SUV measurements
    group = _groups(b)[0]
    assert _ident(group, "112039") == "primary tumor"
    members = _ref_targets(b, group["hasMember"])
    suv = [m for m in members if m["code"]["coding"][0]["code"] == "126401"]
    mean = next(m for m in suv if m["component"][0]["valueCodeableConcept"]["coding"][0]["display"] == "Mean")
    assert mean["valueQuantity"]["value"] == 6.01529 and mean["valueQuantity"]["code"] == "{SUVbw}g/ml"
    seg = next(s for s in _ref_targets(b, group["derivedFrom"]) if s["code"]["coding"][0]["code"] == "121191")
    assert seg["instance"][0]["subset"] == ["1"]
    assert seg["instance"][0]["uid"] == "1.2.276.0.7230010.3.1.4.8323329.18591.1440001312.777033"
    assert one(b, "ServiceRequest")["identifier"][0]["value"] == "2076699673350889"


def _dose(b: Bundle) -> dict[str, Any]:
    return next(
        o for o in by_type(b, "Observation") if IM + "ObservationRadiationDoseEuImaging" in o["meta"]["profile"]
    )


def test_ct_rdsr_dose(sr_bundle: Any) -> None:
    b = sr_bundle("CT-RDSR-Siemens-Multi-2.dcm")
    dose = _dose(b)
    assert dose["code"]["coding"][0]["code"] == "73569-6"
    assert "DLP total 77.27 mGy.cm" in dose["valueString"] and "CTDIvol max 8.13 mGy" in dose["valueString"]
    assert dose["valueString"].endswith(NOT_PATIENT_DOSE)
    assert dose["status"] == "final" and one(b, "DiagnosticReport")["status"] == "final"
    url = next(e["fullUrl"] for e in b["entry"] if e["resource"] is dose)
    dr = one(b, "DiagnosticReport")
    assert {"reference": url} in dr["result"] and {"reference": url} in _section(b, "55111-9")["entry"]
    assert any(
        x["valueReference"]["reference"] == url for x in dr["extension"] if x["url"].endswith("HL7IDRImagingProcedure")
    )
    targets = _ref_targets(b, dose["derivedFrom"])
    assert targets[0]["resourceType"] == "ImagingStudy"
    assert (
        targets[1]["resourceType"] == "ImagingSelection"
        and IM + "SrInstanceImagingSelectionEuImaging" in targets[1]["meta"]["profile"]
    )
    device = _ref_targets(b, [dose["device"]])[0]
    assert device["manufacturer"] == "SIEMENS" and device["serialNumber"] == "989801"
    assert dose["effectivePeriod"]["start"].startswith("2018-01-05T17:21:03")
    assert one(b, "ServiceRequest")["identifier"][0]["value"] == "3599305798462538"


def test_dose_detected_from_content_in_enhanced_sr(sr_bundle: Any) -> None:
    b = sr_bundle("CT-ESR-GE_Optima.dcm")  # Enhanced SR SOP Class, CT dose content
    assert "DLP total 415.82 mGycm" in _dose(b)["valueString"]


def test_projection_fluoro_and_mammography_dose(sr_bundle: Any) -> None:
    rf = _dose(sr_bundle("RF-RDSR-Philips_Allura.dcm"))["valueString"]
    assert "fluoroscopy time total 13 s" in rf and "DAP total 0.000153569 Gy.m2" in rf
    mg = _dose(sr_bundle("MG-RDSR-Hologic_2D.dcm"))["valueString"]
    assert mg.startswith("Mammography") and "accumulated average glandular dose 1.3 mGy, 1.28 mGy" in mg
    dx = _dose(sr_bundle("DX-RDSR-Canon_CXDI.dcm"))["valueString"]
    assert "DAP total 1.07e-05 Gy.m2" in dx
    dual = sr_bundle("Dual-RDSR-RF.dcm")
    assert one(dual, "DiagnosticReport")["status"] == "partial"  # PARTIAL dose record
    assert _dose(dual)["status"] == "preliminary"


def test_encapsulated_pdf_presented_form(sr_bundle: Any) -> None:
    b = sr_bundle("sample-pdf.dcm")
    assert b["type"] == "collection"
    dr = one(b, "DiagnosticReport")
    assert dr["meta"]["profile"] == [IM + "DiagnosticReportEuImagingMinimalMetadata"]
    form = dr["presentedForm"][0]
    assert form["contentType"] == "application/pdf"
    pdf = base64.b64decode(form["data"])
    assert pdf.startswith(b"%PDF") and b"%%EOF" in pdf[-32:]
    assert dr["study"][0]["identifier"]["value"] == "urn:oid:1.2.276.0.7230010.3.1.2.2344313775.14992.1458058363.6979"
    assert one(b, "Patient")["identifier"][0]["value"] == "3456"
    assert dr["status"] == "final"
