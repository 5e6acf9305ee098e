"""The harmonized and IMR transaction Bundles against a real HAPI FHIR R5 server (reference integrity on).

The publisher lives elsewhere; here a plain httpx POST of the Bundle to the base URL (RC-01)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

from tests.models.conftest import FHIR_JSON
from tests.models.helpers import convert, one_bundle, sr_bytes
from tests.models.oru_factory import ACCESSION, STUDY_UID, oru

_PATIENT = "urn:imaging-engine:sid/Test-Hospital/patient-id|PID-11235"


def post(fhir: Any, bundle: dict[str, Any]) -> list[str]:
    """POST a transaction or batch to [base] (not [base]/Bundle) as application/fhir+json; the entry statuses."""
    r = fhir.post(str(fhir.base_url).rstrip("/"), content=json.dumps(bundle), headers={"Content-Type": FHIR_JSON})
    assert r.status_code == 200, r.text[:2000]
    out = r.json()
    assert out["type"] == f"{bundle['type']}-response"
    return [e["response"]["status"] for e in out["entry"]]


def search(fhir: Any, query: str) -> list[dict[str, Any]]:
    r = fhir.get(query)
    assert r.status_code == 200, r.text[:1000]
    return [e["resource"] for e in r.json().get("entry", [])]


def count(fhir: Any, rtype: str) -> int:
    r = fhir.get(f"{rtype}?_summary=count")
    return int(r.json()["total"])


def by_ident(rtype: str, ident: str) -> str:
    system, value = ident.split("|", 1)
    return f"{rtype}?identifier={quote(system, safe=':/')}%7C{quote(value, safe='')}"


def publish(fhir: Any, data: bytes, model: str = "harmonized") -> None:
    for bundle in convert(data, model):
        post(fhir, bundle)


def test_two_reports_of_one_patient_give_one_patient(fhir: Any) -> None:
    publish(fhir, oru(filler="FI-1", accession="A-1"))
    publish(fhir, oru(filler="FI-2", accession="A-2", study_uid="1.2.3.4.5", birth="", sex=""))  # thinner
    patients = search(fhir, by_ident("Patient", _PATIENT))
    assert len(patients) == 1
    assert patients[0]["birthDate"] == "1967-07-01"  # the thinner message did not overwrite
    assert count(fhir, "DiagnosticReport") == 2 and count(fhir, "ServiceRequest") == 2


def test_oru_and_its_sr_share_study_and_order(fhir: Any) -> None:
    publish(fhir, oru())
    publish(fhir, sr_bytes())
    assert len(search(fhir, by_ident("ImagingStudy", f"urn:dicom:uid|urn:oid:{STUDY_UID}"))) == 1
    assert len(search(fhir, by_ident("ServiceRequest", f"http://test-hospital.org/acsn|{ACCESSION}"))) == 1
    assert count(fhir, "ImagingStudy") == 1 and count(fhir, "ServiceRequest") == 1 and count(fhir, "Patient") == 1
    acsn = by_ident("ServiceRequest", f"http://test-hospital.org/acsn|{ACCESSION}").split("=", 1)[1]
    reports = search(fhir, f"DiagnosticReport?based-on:ServiceRequest.identifier={acsn}")
    assert len(reports) == 2  # the ORU's and the SR's report, on the one order


def test_versions_update_one_report_with_history_and_resend_changes_nothing(fhir: Any) -> None:
    publish(fhir, oru(obr25="P", obx11="P", text="Preliminary read.", obr22="20250101110000+0100"))
    publish(fhir, oru())
    publish(fhir, oru(obr25="C", obx11="C", text="Corrected: 4 mm nodule.", obr22="20250102090000+0100"))
    reports = search(fhir, "DiagnosticReport")
    assert len(reports) == 1 and reports[0]["status"] == "corrected"
    dr_id = reports[0]["id"]
    history = fhir.get(f"DiagnosticReport/{dr_id}/_history").json()
    assert history["total"] == 3
    assert [e["resource"]["status"] for e in history["entry"]] == ["corrected", "final", "preliminary"]
    comps = search(fhir, "Composition")
    assert len(comps) == 1 and comps[0]["meta"]["versionId"] == "3"
    totals = {t: count(fhir, t) for t in ("Patient", "Provenance", "Observation", "Organization", "Practitioner")}
    version = reports[0]["meta"]["versionId"]
    statuses = post(
        fhir,
        one_bundle(
            oru(obr25="C", obx11="C", text="Corrected: 4 mm nodule.", obr22="20250102090000+0100"), "harmonized"
        ),
    )
    assert not [s for s in statuses if s.startswith("201")]
    assert search(fhir, "DiagnosticReport")[0]["meta"]["versionId"] == version
    assert {t: count(fhir, t) for t in totals} == totals


def _report_text(fhir: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    dr = search(fhir, "DiagnosticReport")[0]
    comp = search(fhir, "Composition")[0]
    return dr, comp


def test_status_change_keeps_the_text(fhir: Any) -> None:
    publish(fhir, oru())
    dr0, comp0 = _report_text(fhir)
    publish(fhir, oru(obr25="X", text="", impression="Cancelled."))  # a cancel that carries (other) OBX text
    dr1, comp1 = _report_text(fhir)
    assert dr1["status"] == "cancelled" and comp1["status"] == "cancelled"
    assert dr1["note"] == dr0["note"] and comp1["section"] == comp0["section"]
    assert search(fhir, "ServiceRequest")[0]["status"] == "revoked"


def test_status_only_oru_updates_order_and_study_only(fhir: Any) -> None:
    publish(fhir, oru())
    before = {
        t: [r["meta"]["versionId"] for r in search(fhir, t)] for t in ("DiagnosticReport", "Composition", "Patient")
    }
    publish(fhir, oru(text=None, impression=None, obr25="X"))
    assert search(fhir, "ServiceRequest")[0]["status"] == "revoked"
    assert search(fhir, "ImagingStudy")[0]["status"] == "cancelled"
    after = {t: [r["meta"]["versionId"] for r in search(fhir, t)] for t in before}
    assert after == before
    dr = search(fhir, "DiagnosticReport")[0]
    assert dr["status"] == "final" and "Lungs are clear." in json.dumps(dr["note"])


def test_status_only_oru_for_an_unknown_order_creates_nothing(fhir: Any) -> None:
    statuses = post(fhir, one_bundle(oru(text=None, impression=None, obr25="S"), "harmonized"))
    assert statuses and all(s.startswith("404") for s in statuses)  # batch: nothing to update yet
    assert count(fhir, "ServiceRequest") == 0 and count(fhir, "Patient") == 0


def test_addendum_is_a_second_report_linked_to_the_first(fhir: Any) -> None:
    publish(fhir, oru())
    publish(fhir, oru(obr25="B", text="Addendum: compared with 2024 CT, stable.", obr22="20250103090000+0100"))
    reports = search(fhir, "DiagnosticReport")
    assert len(reports) == 2
    comps = search(fhir, "Composition")
    addendum = next(c for c in comps if c.get("relatesTo"))
    original = next(c for c in comps if not c.get("relatesTo"))
    assert addendum["relatesTo"][0]["type"] == "appends"
    assert addendum["relatesTo"][0]["resourceReference"]["identifier"]["value"] == original["identifier"][0]["value"]
    assert count(fhir, "ServiceRequest") == 1


def test_complete_demographics_update_the_patient(fhir: Any) -> None:
    publish(fhir, oru(birth="", sex=""))
    assert "birthDate" not in search(fhir, "Patient")[0]
    publish(fhir, oru(filler="FI-2", accession="A-2", name="EXAMPLE^MARIA"))
    patients = search(fhir, "Patient")
    assert (
        len(patients) == 1 and patients[0]["birthDate"] == "1967-07-01" and patients[0]["name"][0]["given"] == ["MARIA"]
    )


def _precreate_participants(fhir: Any, bundle: dict[str, Any]) -> dict[str, str]:
    """Patient, Organization, Practitioner exist before RAD-141 (IMR never creates them)."""
    dr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    ids = {}
    for ref in (dr["subject"]["reference"], dr["performer"][0]["reference"], dr["resultsInterpreter"][0]["reference"]):
        rtype, query = ref.split("?", 1)
        from urllib.parse import unquote

        system, value = unquote(query.split("=", 1)[1]).split("|", 1)
        res: dict[str, Any] = {"resourceType": rtype, "identifier": [{"system": system, "value": value}]}
        res["name"] = "Test Hospital" if rtype == "Organization" else [{"family": "EXAMPLE"}]
        r = fhir.post(rtype, content=json.dumps(res), headers={"Content-Type": FHIR_JSON})
        assert r.status_code == 201, r.text
        ids[rtype] = f"{rtype}/{r.json()['id']}"
    return ids


def test_rc01_imr_bundle_accepted_by_the_server(fhir: Any) -> None:
    from pipelines.output.imr import ImrOptions, shape_imr
    from tests.models.test_imr import WADO, sr_report

    bundle = shape_imr(sr_report(), ImrOptions(wado_rs={"TH": WADO}))
    ids = _precreate_participants(fhir, bundle)
    assert set(post(fhir, bundle)) == {"201 Created"}
    dr = search(fhir, "DiagnosticReport")[0]
    assert dr["subject"]["reference"] == ids["Patient"]
    assert dr["performer"][0]["reference"] == ids["Organization"]
    assert dr["resultsInterpreter"][0]["reference"] == ids["Practitioner"]
    html = base64.b64decode(dr["presentedForm"][0]["data"])
    assert f'<a href="{WADO}/studies/'.encode() in html
    assert count(fhir, "ImagingSelection") == 2 and count(fhir, "Endpoint") == 1
    assert set(post(fhir, bundle)) == {"200 OK"}  # resend: nothing created twice
    assert count(fhir, "DiagnosticReport") == 1 and count(fhir, "Patient") == 1


def test_imr_bundle_of_an_oru_with_unknown_patient_is_refused(fhir: Any) -> None:
    bundle = one_bundle(oru(), "imr")
    r = fhir.post(str(fhir.base_url).rstrip("/"), content=json.dumps(bundle), headers={"Content-Type": FHIR_JSON})
    assert 400 <= r.status_code < 500  # IMR references existing participants only; nothing is created
    assert count(fhir, "DiagnosticReport") == 0
    _precreate_participants(fhir, bundle)
    assert set(post(fhir, bundle)) == {"201 Created"}
