"""The harmonized model (approach 3, pipelines/output/harmonized.py): structure and merge rules, pure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.output.harmonized import HarmonizedOptions, order_statuses
from tests.models.helpers import convert, entries, entry, one_bundle, patch_ops, request_key, sr_bytes
from tests.models.oru_factory import ACCESSION, STUDY_UID, oru

GOLDEN = Path(__file__).parent / "golden"


def test_golden_oru_transaction() -> None:
    """Byte-for-byte golden output of one ORU (regenerate deliberately: UPDATE_GOLDEN=1)."""
    import os

    bundle = one_bundle(oru(), "harmonized")
    path = GOLDEN / "harmonized-oru.json"
    text = json.dumps(bundle, indent=1, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_requests_per_resource_type() -> None:
    bundle = one_bundle(oru(), "harmonized")
    assert bundle["type"] == "transaction"
    methods = {e["resource"]["resourceType"]: request_key(e) for e in bundle["entry"]}
    for rtype in ("ImagingStudy", "ServiceRequest", "Organization", "Practitioner"):
        method, url, cond = methods[rtype]
        assert (method, url) == ("POST", rtype) and cond.startswith("identifier="), rtype
        assert "id" not in entry(bundle, rtype)["resource"]  # conditional: the server picks the resource
    assert methods["ImagingStudy"][2] == f"identifier=urn:dicom:uid%7Curn:oid:{STUDY_UID}"
    assert methods["ServiceRequest"][2] == f"identifier=http://test-hospital.org/acsn%7C{ACCESSION}"
    for rtype in ("DiagnosticReport", "Composition"):
        assert methods[rtype][0] == "PUT" and methods[rtype][1].startswith(f"{rtype}?identifier=")
    assert methods["PractitionerRole"][0:2] == (
        "PUT",
        f"PractitionerRole/{entry(bundle, 'PractitionerRole')['resource']['id']}",
    )
    for e in bundle["entry"]:
        assert e["fullUrl"].startswith("urn:uuid:")


def test_references_stay_inside_the_transaction() -> None:
    bundle = one_bundle(sr_bytes(), "harmonized")
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    refs: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            if isinstance(v.get("reference"), str):
                refs.append(v["reference"])
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk([e["resource"] for e in bundle["entry"]])
    assert refs and all(r in full_urls for r in refs), set(refs) - full_urls


def test_one_provenance_per_derived_resource() -> None:
    bundle = one_bundle(sr_bytes(), "harmonized")
    derived = [e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] != "Provenance"]
    provs = [e["resource"] for e in entries(bundle, "Provenance")]
    assert sorted(p["target"][0]["reference"] for p in provs) == sorted(derived)
    source_ids = {json.dumps(p["entity"][0]["what"]["identifier"]) for p in provs}
    assert len(source_ids) == 1  # every derived resource points at the one source document
    assert all(e["request"]["method"] == "PUT" for e in entries(bundle, "Provenance"))


def test_oru_and_sr_of_one_accession_share_study_and_order_keys() -> None:
    h_oru = one_bundle(oru(), "harmonized")
    h_sr = one_bundle(sr_bytes(), "harmonized")
    for rtype in ("ImagingStudy", "ServiceRequest", "Patient"):
        k1 = request_key(entry(h_oru, rtype))
        k2 = request_key(entry(h_sr, rtype))
        assert (k1[1], k1[2]) != ("", "")
        assert (k1[2] or k1[1]) == (k2[2] or k2[1]), rtype  # same match URL, whatever the method


def test_versions_update_the_same_report() -> None:
    p = one_bundle(oru(obr25="P", obx11="P", obr22="20250101110000+0100"), "harmonized")
    f = one_bundle(oru(), "harmonized")
    c = one_bundle(
        oru(obr25="C", obx11="C", text="Corrected: small nodule.", obr22="20250102090000+0100"), "harmonized"
    )
    keys = {request_key(entry(b, "DiagnosticReport")) for b in (p, f, c)}
    assert len(keys) == 1 and next(iter(keys))[0] == "PUT"
    assert [entry(b, "DiagnosticReport")["resource"]["status"] for b in (p, f, c)] == [
        "preliminary",
        "final",
        "corrected",
    ]
    assert len({b["id"] for b in (p, f, c)}) == 3


def test_resend_is_byte_identical() -> None:
    assert convert(oru(), "harmonized") == convert(oru(), "harmonized")


def test_addendum_is_its_own_report_linked_to_the_original() -> None:
    original = one_bundle(oru(), "harmonized")
    add = one_bundle(
        oru(obr25="B", obx11="F", text="Addendum: compared with prior.", obr22="20250103090000+0100"), "harmonized"
    )
    orig_key = request_key(entry(original, "DiagnosticReport"))
    add_key = request_key(entry(add, "DiagnosticReport"))
    assert add_key != orig_key
    comp = entry(add, "Composition")["resource"]
    orig_ident = entry(original, "DiagnosticReport")["resource"]["identifier"][0]
    assert comp["relatesTo"] == [{"type": "appends", "resourceReference": {"identifier": orig_ident}}]
    assert entry(add, "DiagnosticReport")["resource"]["status"] == "final"
    assert request_key(entry(add, "ServiceRequest")) == request_key(entry(original, "ServiceRequest"))


@pytest.mark.parametrize(
    ("obr25", "obx11", "status", "sr_status"), [("X", "F", "cancelled", "revoked"), ("", "U", "final", "completed")]
)
def test_status_change_patches_status_only(obr25: str, obx11: str, status: str, sr_status: str) -> None:
    bundle = one_bundle(oru(obr25=obr25, obx11=obx11), "harmonized")
    assert all(e["request"]["method"] == "PATCH" for e in bundle["entry"])
    by_url = {e["request"]["url"].split("?")[0]: patch_ops(e) for e in bundle["entry"]}
    assert by_url["DiagnosticReport"] == [{"op": "add", "path": "/status", "value": status}]
    assert by_url["Composition"] == [{"op": "add", "path": "/status", "value": status}]
    assert by_url["ServiceRequest"] == [{"op": "add", "path": "/status", "value": sr_status}]
    assert not any(e["resource"]["resourceType"] == "Composition" for e in bundle["entry"])  # no text PUT


def test_status_only_oru_updates_order_and_study_only() -> None:
    bundle = one_bundle(oru(text=None, impression=None, obr25="X"), "harmonized")
    assert bundle["type"] == "batch"
    urls = sorted(e["request"]["url"] for e in bundle["entry"])
    assert urls == [
        f"ImagingStudy?identifier=urn:dicom:uid%7Curn:oid:{STUDY_UID}",
        f"ServiceRequest?identifier=http://test-hospital.org/acsn%7C{ACCESSION}",
    ]
    assert [patch_ops(e)[0]["value"] for e in bundle["entry"]] == ["revoked", "cancelled"]


def test_status_only_oru_stays_filtered_in_the_document_model() -> None:
    from engine.convert import Converter
    from tests.models.oru_factory import context

    result = Converter(context(), "document").convert(oru(text=None, impression=None, obr25="X"))
    assert not result.outputs
    assert not result.rejections  # not a report in this model: filtered, never a dead letter
    assert [f.reason for f in result.filtered] == ["no report content: no text, coded finding or document in any OBX"]
    assert result.filtered[0].category == "UnsupportedMessage"


def test_status_only_without_order_status_is_not_converted() -> None:
    from engine.convert import Converter
    from tests.models.oru_factory import context

    result = Converter(context(), "harmonized").convert(oru(text=None, impression=None, obr25="Y"))
    assert not result.outputs and not result.rejections and len(result.filtered) == 1
    assert order_statuses("Y") is None and order_statuses("in progress") == ("active", None)


def test_patient_merge_rules() -> None:
    complete = entry(one_bundle(oru(), "harmonized"), "Patient")
    assert complete["request"]["method"] == "PUT" and complete["request"]["url"].startswith("Patient?identifier=")
    thin = entry(one_bundle(oru(birth="", sex=""), "harmonized"), "Patient")
    assert thin["request"]["method"] == "POST" and thin["request"]["ifNoneExist"].startswith("identifier=")
    year_only = entry(one_bundle(oru(birth="1967"), "harmonized"), "Patient")
    assert year_only["request"]["method"] == "POST"


def test_patient_update_never_option() -> None:
    from engine.cmd_map import load_mapping_context  # noqa: F401  (same import path as the CLI)
    from pipelines.hl7v2 import map_message
    from pipelines.output.harmonized import shape_harmonized
    from tests.models.oru_factory import context

    report = map_message(oru(), context())[0]
    bundle = shape_harmonized(report, HarmonizedOptions(patient_update="never"))
    assert entry(bundle, "Patient")["request"]["method"] == "POST"
    with pytest.raises(ValueError):
        HarmonizedOptions(patient_update="always")


def test_identifier_values_are_percent_encoded() -> None:
    from pipelines.output.transaction import match_url

    url = match_url("Patient", {"system": "urn:x", "value": "A&B #1+2|3"})
    assert url == "Patient?identifier=urn:x%7CA%26B%20%231%2B2%7C3"
