"""IHE IMR Report Creator (pipelines/output/imr.py): the RAD-141 Bundle against ihe-imr.md §7.1, one test per
checklist item (RC-01, the POST itself, is tested against the real server in test_hapi_models.py)."""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import pytest

from pipelines.common.model import Ident, Organization, Report
from pipelines.errors import ModelRequirement
from pipelines.output.imr import ImrOptions, shape_imr
from pipelines.output.imr_render import wado_rendered_url
from tests.models.helpers import entries, entry, sr_bytes

WADO = "https://pacs.test-hospital.example/dicom-web"
_CONDITIONAL = re.compile(r"^(Patient|Organization|Practitioner)\?identifier=[^&]+%7C[^&]+$")


def sr_report() -> Report:
    """The HL7 SR IG measurement report (image regions, segments, SR content items), with the identifiers
    an IMR Report Creator must know for the participants it references (interpreter, organisation)."""
    from pipelines.dicom_sr import map_dicom
    from tests.models.oru_factory import context

    report = map_dicom(sr_bytes(), context())[0]
    interp = replace(
        report.interpreters[0], identifiers=[Ident(system="urn:oid:2.16.840.1.113883.19.5", value="RAD77")]
    )
    org = Organization(name="Test Hospital", identifiers=[Ident(system="urn:oid:2.16.840.1.113883.19", value="TH")])
    return replace(report, interpreters=[interp], performer=org)


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return shape_imr(sr_report(), ImrOptions(wado_rs={"TH": WADO}))


def _dr(bundle: dict[str, Any]) -> dict[str, Any]:
    return entry(bundle, "DiagnosticReport")["resource"]


def _html(bundle: dict[str, Any]) -> str:
    form = next(f for f in _dr(bundle)["presentedForm"] if f["contentType"] == "text/html")
    return base64.b64decode(form["data"]).decode("utf-8")


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return own + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def test_rc02_transaction_with_imr_bundle_profile(bundle: dict[str, Any]) -> None:
    assert bundle["type"] == "transaction"
    assert (
        "https://profiles.ihe.net/RAD/IMR/StructureDefinition/imr-store-multimedia-report-bundle"
        in bundle["meta"]["profile"]
    )


def test_rc03_one_report_all_post_urn_uuid_and_internal_references(bundle: dict[str, Any]) -> None:
    assert len(entries(bundle, "DiagnosticReport")) == 1
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    for e in bundle["entry"]:
        assert e["request"]["method"] == "POST"
        assert e["request"]["url"] == e["resource"]["resourceType"]
        assert e["fullUrl"].startswith("urn:uuid:")
    for ref in _refs([e["resource"] for e in bundle["entry"]]):
        assert ref in full_urls or _CONDITIONAL.match(ref), ref


def test_rc04_no_contained_and_no_participant_entries(bundle: dict[str, Any]) -> None:
    assert '"contained"' not in str(bundle).replace("'", '"')
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert not types & {"Patient", "Organization", "Practitioner", "PractitionerRole"}


def test_rc05_diagnostic_report_mandatory_elements(bundle: dict[str, Any]) -> None:
    dr = _dr(bundle)
    assert dr["subject"]["reference"].startswith("Patient?identifier=")
    assert dr["issued"]
    assert [p["reference"].split("?")[0] for p in dr["performer"]] == ["Organization"]
    assert dr["resultsInterpreter"][0]["reference"].startswith(
        "Practitioner?identifier=urn:oid:2.16.840.1.113883.19.5%7CRAD77"
    )
    studies = {e["fullUrl"] for e in entries(bundle, "ImagingStudy")}
    assert dr["study"] and {s["reference"] for s in dr["study"]} <= studies
    assert dr["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert not [x for x in dr.get("extension", []) if "associatedStudy" not in x["url"]]


def test_rc06_html_rendition_with_size_hash_and_data(bundle: dict[str, Any]) -> None:
    forms = _dr(bundle)["presentedForm"]
    assert any(f["contentType"] == "text/html" for f in forms)
    for form in forms:
        assert form["contentType"] and form["size"] and form["hash"] and ("data" in form or "url" in form)


def test_rc07_size_and_hash_match_the_bytes(bundle: dict[str, Any]) -> None:
    for form in _dr(bundle)["presentedForm"]:
        raw = base64.b64decode(form["data"])
        assert form["size"] == str(len(raw))  # R5 integer64 is a JSON string
        assert form["hash"] == base64.b64encode(hashlib.sha1(raw).digest()).decode()


def test_rc08_url_renditions_have_their_binary_in_the_bundle(bundle: dict[str, Any]) -> None:
    binaries = {e["fullUrl"] for e in entries(bundle, "Binary")}
    for form in _dr(bundle)["presentedForm"]:
        assert "url" not in form or form["url"] in binaries


def test_rc09_every_span_resolves_to_a_selection_in_the_bundle(bundle: dict[str, Any]) -> None:
    div = _dr(bundle)["text"]["div"]
    root = ET.fromstring(div)  # well-formed XHTML
    spans = [s for s in root.iter("{http://www.w3.org/1999/xhtml}span") if s.get("class") == "imr-ref-ImagingSelection"]
    selections = {e["resource"]["id"] for e in entries(bundle, "ImagingSelection")}
    assert spans and len(spans) == len(selections)
    assert {s.get("id") for s in spans} == {f"ImagingSelection/{i}" for i in selections}
    for e in entries(bundle, "ImagingSelection"):  # and findable by identifier once the server assigned its id
        assert {"system": "urn:ietf:rfc:3986", "value": e["fullUrl"]} in e["resource"]["identifier"]


def test_rc10_rendition_links_instead_of_spans(bundle: dict[str, Any]) -> None:
    html = _html(bundle)
    assert "imr-ref" not in html
    hrefs = re.findall(r'<a href="([^"]+)">', html)
    assert len(hrefs) == len(entries(bundle, "ImagingSelection"))
    for href in hrefs:
        assert href.startswith(WADO + "/studies/") and href.endswith("/rendered")  # display-ready, never raw DICOM


def test_rc11_selections_have_patient_subject_and_endpoint(bundle: dict[str, Any]) -> None:
    endpoints = {e["fullUrl"] for e in entries(bundle, "Endpoint")}
    for e in entries(bundle, "ImagingSelection"):
        sel = e["resource"]
        assert "subject" not in sel or sel["subject"]["reference"].startswith("Patient?identifier=")
        assert sel["endpoint"] and {r["reference"] for r in sel["endpoint"]} <= endpoints


def test_rc12_imaging_study_conforms(bundle: dict[str, Any]) -> None:
    endpoints = {e["fullUrl"] for e in entries(bundle, "Endpoint")}
    for e in entries(bundle, "ImagingStudy"):
        st = e["resource"]
        assert any(i["system"] == "urn:dicom:uid" and i["value"].startswith("urn:oid:") for i in st["identifier"])
        assert st["modality"] and st["started"]
        assert st["endpoint"] and {r["reference"] for r in st["endpoint"]} <= endpoints
        assert st["subject"]["reference"].startswith("Patient?identifier=")


def test_rc13_endpoint_connection_and_one_payload_type(bundle: dict[str, Any]) -> None:
    for e in entries(bundle, "Endpoint"):
        ep = e["resource"]
        codes = [c["code"] for cc in ep["connectionType"] for c in cc["coding"]]
        assert codes and set(codes) <= {"dicom-wado-rs", "ihe-iid"}
        assert len([t for p in ep["payload"] for t in p["type"]]) == 1
        assert ep["address"] == WADO


def test_rc14_service_request_accession_and_intent(bundle: dict[str, Any]) -> None:
    srs = entries(bundle, "ServiceRequest")
    assert srs
    for e in srs:
        sr = e["resource"]
        acsn = [i for i in sr["identifier"] if any(c.get("code") == "ACSN" for c in i["type"]["coding"])]
        assert acsn and acsn[0]["value"]
        assert sr["intent"] in {"order", "original-order", "reflex-order", "filler-order", "instance-order"}


def test_participants_without_identifiers_are_not_an_imr_report() -> None:
    report = sr_report()
    with pytest.raises(ModelRequirement, match="Practitioner"):
        shape_imr(replace(report, interpreters=[replace(report.interpreters[0], identifiers=[])]))
    with pytest.raises(ModelRequirement, match="Study Instance UID"):
        shape_imr(replace(report, studies=[]))


def test_resend_and_versions() -> None:
    report = sr_report()
    a, b = shape_imr(report), shape_imr(report)
    assert a == b
    corrected = shape_imr(replace(report, status="corrected", version_key=report.version_key + "-c"))
    dr_a, dr_c = _dr(a), _dr(corrected)
    assert dr_a["identifier"][0] == dr_c["identifier"][0]  # same report
    assert (
        entry(a, "DiagnosticReport")["request"]["ifNoneExist"]
        != entry(corrected, "DiagnosticReport")["request"]["ifNoneExist"]
    )


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ({"studyUid": "1.2"}, "B/studies/1.2/rendered"),
        ({"studyUid": "1.2", "seriesUid": "1.2.3"}, "B/studies/1.2/series/1.2.3/rendered"),
        (
            {"studyUid": "1.2", "seriesUid": "1.2.3", "instance": [{"uid": "1.2.3.4", "subset": ["5", "2"]}]},
            "B/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/5,2/rendered",
        ),
        (
            {
                "studyUid": "1",
                "seriesUid": "2",
                "instance": [
                    {"uid": "3", "sopClass": {"code": "urn:oid:1.2.840.10008.5.1.4.1.1.66.4"}, "subset": ["1"]}
                ],
            },
            "B/studies/1/series/2/instances/3/rendered",
        ),
    ],
)
def test_wado_rendered_urls(selection: dict[str, Any], expected: str) -> None:
    assert wado_rendered_url("B/", selection) == expected


def test_engine_map_imr_of_an_oru() -> None:
    from tests.models.helpers import one_bundle
    from tests.models.oru_factory import oru

    bundle = one_bundle(oru(), "imr")
    dr = _dr(bundle)
    assert dr["resultsInterpreter"][0]["reference"].startswith("Practitioner?identifier=")
    assert "Lungs are clear." in _html(bundle) and "Lungs are clear." in dr["text"]["div"]


def test_rc16_pdf_option_same_links_deterministic() -> None:
    pytest.importorskip("xhtml2pdf")
    a = shape_imr(sr_report(), ImrOptions(wado_rs={"TH": WADO}, pdf=True))
    forms = _dr(a)["presentedForm"]
    assert [f["contentType"] for f in forms] == ["text/html", "application/pdf"]
    raw = base64.b64decode(forms[1]["data"])
    assert raw.startswith(b"%PDF-") and forms[1]["size"] == str(len(raw))
    assert forms[1]["hash"] == base64.b64encode(hashlib.sha1(raw).digest()).decode()
    for href in re.findall(r'<a href="([^"]+)">', _html(a)):
        assert f"/URI ({href})".encode() in raw
    assert shape_imr(sr_report(), ImrOptions(wado_rs={"TH": WADO}, pdf=True)) == a


def test_an_identifier_holding_an_ampersand_is_referenced_logically() -> None:
    """PID-3 / HD with ``\\T\\`` (field report 03's kind): ``Patient?identifier=...%7CPAT%260003`` is a correct
    query, but the official validator reads it as "not a valid query string"; such a participant is referenced by
    type and identifier instead (the value kept exactly), every other reference stays conditional."""
    import json

    from engine.cmd_map import load_mapping_context
    from engine.convert import Converter
    from tests.conftest import TESTDATA

    raw = (TESTDATA / "field-reports" / "03-delimiter-escapes-text-and-names.hl7").read_bytes()
    raw = raw.replace(b"PAT0003^^^NORTHCLINIC", b"PAT\\T\\0003^^^NORTH\\T\\CLINIC")
    result = Converter(load_mapping_context(None), "imr").convert(raw)
    assert not result.rejections and len(result.outputs) == 1
    bundle = json.loads(result.outputs[0].body)
    assert "%26" not in result.outputs[0].body.decode()
    subjects = [e["resource"]["subject"] for e in bundle["entry"] if "subject" in e["resource"]]
    assert subjects and all(s.get("type") == "Patient" and "reference" not in s for s in subjects)
    assert {s["identifier"]["value"] for s in subjects} == {"PAT&0003"}
    dr = _dr(bundle)
    assert dr["performer"][0]["reference"].startswith("Organization?identifier=")  # no "&": still conditional
