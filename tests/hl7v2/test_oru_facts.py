"""Facts of the converted reports for a representative set of the shared ORU samples."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.conftest import TESTDATA
from tests.hl7v2.helpers import bundles, one, resources, section, section_note

SCOUT = TESTDATA / "hl7v2-washu-scout" / "messages"


def convert(converter: Any, path: Path) -> list[dict[str, Any]]:
    result = converter.convert(path.read_bytes())
    assert not result.rejections, [r.reason for r in result.rejections]
    return bundles(result)


def accession(bundle: dict[str, Any]) -> str:
    sr = one(bundle, "ServiceRequest")
    return str(sr["identifier"][0]["value"])


def test_scout_final_with_zds_study_uid(converter: Any) -> None:
    [b] = convert(converter, SCOUT / "scout-13-v2.7-Final-20250814-22.hl7")
    assert b["type"] == "document" and b["entry"][0]["resource"]["resourceType"] == "Composition"
    patient = one(b, "Patient")
    assert patient["identifier"][0]["value"] == "ABC1234348"
    assert patient["birthDate"] == "1955-03-04" and patient["gender"] == "female"
    assert accession(b) == "620943177"  # OBR-3 by the shipped sender profile (OBR-18 holds the body part)
    study = one(b, "ImagingStudy")
    assert study["identifier"][0]["value"] == "urn:oid:2.25.294907481242086090937208324724781073257"
    assert study["modality"][0]["coding"][0]["code"] == "MR"  # OBR-24 MR
    dr = one(b, "DiagnosticReport")
    assert dr["status"] == "final" and one(b, "Composition")["status"] == "final"
    impression = section_note(b, "19005-8")
    assert impression.startswith("IMPRESSION:\nMild diffuse periventricular and subcortical small vessel ischemic")
    assert "Dictated by:" in impression and dr["conclusion"] == impression
    findings = section_note(b, "59776-5")
    assert "FINDINGS:\nAxial, sagittal, and coronal sequences" in findings and "\n\nFINDINGS" in findings
    assert "previously unreported" in section_note(b, "55107-7")  # &ADT addendum text, own open section


def test_scout_v23_minimal_metadata_without_study_uid(converter: Any) -> None:
    [b] = convert(converter, SCOUT / "scout-02-v2.3-Final-20250814-19.hl7")
    assert b["type"] == "collection"
    assert not resources(b, "ImagingStudy") and not resources(b, "Composition")
    dr = one(b, "DiagnosticReport")
    assert dr["meta"]["profile"][0].endswith("DiagnosticReportEuImagingMinimalMetadata")
    assert dr["status"] == "final"
    assert dr["basedOn"] == [{"identifier": dr["basedOn"][0]["identifier"]}]
    assert dr["basedOn"][0]["identifier"]["value"] == "620943146"
    notes = {n["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]: n["text"] for n in dr["note"]}
    assert notes["19005-8"].startswith("IMPRESSION:\nMarked progression of cervical spondylosis")
    assert one(b, "Practitioner")["name"][0]["family"] == "WILLIAMS"  # OBR-32 results interpreter
    assert dr["resultsInterpreter"][0]["reference"].startswith("urn:uuid:")


def test_word_statuses(converter: Any) -> None:
    status = {
        "scout-04-v2.3-Prelim-20250814-29.hl7": "preliminary",
        "scout-05-v2.3-WetRead-20250814-4.hl7": "preliminary",
        "scout-30-v2.7-Final-20240725-0.hl7": "final",
        "scout-01-v2.3-nostatus-20260329-4.hl7": "final",  # no OBR-25: OBX-11 F
    }
    for name, expected in status.items():
        [b] = convert(converter, SCOUT / name)
        assert one(b, "DiagnosticReport")["status"] == expected, name


def test_rad128_style_structured_oru(converter: Any) -> None:
    [b] = convert(converter, TESTDATA / "hl7v2-dcm4che" / "ORU_R01-SR.hl7")
    assert b["type"] == "document"
    assert one(b, "ImagingStudy")["identifier"][0]["value"] == "urn:oid:1.2.392.200036.9125.0.198811291108.7"
    assert one(b, "Patient")["identifier"][0]["value"] == "PID_1"
    text = section_note(b, "59776-5")
    assert "The right kidney is slightly enlarged" in text and "small mass in the left lung" in text
    assert "Follow-up with CT of the Abdomen" in section_note(b, "18783-1")
    obs = {o["code"]["coding"][0]["code"]: o for o in resources(b, "Observation")}
    assert obs["309088003"]["valueCodeableConcept"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10",
        "code": "C65.2",
        "display": "Malignant neoplasm of left renal pelvis",
    }
    assert obs["309088003"]["interpretation"][0]["coding"][0]["code"] == "AA"
    masses = [o["valueString"] for o in resources(b, "Observation") if o["code"]["coding"][0]["code"] == "300332007"]
    assert masses == ["4mmx6mm", "5mmx7mm"]
    dr = one(b, "DiagnosticReport")
    result_refs = {r["reference"] for r in dr["result"]}
    for sec in one(b, "Composition")["section"]:  # dgr-1: every Observation in a section is in result
        for entry in sec.get("entry", []):
            if entry["reference"] in {
                e["fullUrl"] for e in b["entry"] if e["resource"]["resourceType"] == "Observation"
            }:
                assert entry["reference"] in result_refs


def test_encapsulated_pdf_and_cda(converter: Any) -> None:
    [pdf] = convert(converter, TESTDATA / "hl7v2-dcm4che" / "ORU_R01-PDF.hl7")
    dr = one(pdf, "DiagnosticReport")
    form = dr["presentedForm"][0]
    assert form["contentType"] == "application/pdf"
    assert base64.b64decode(form["data"]).startswith(b"%PDF-1.3")  # base64 wrapped over lines, glued back
    assert dr["study"][0]["identifier"]["value"] == "urn:oid:1.2.392.200036.9125.0.198811291108.7"
    [cda] = convert(converter, TESTDATA / "hl7v2-dcm4che" / "ORU_R01-CDA.hl7")
    form = one(cda, "DiagnosticReport")["presentedForm"][0]
    assert form["contentType"] == "application/hl7-cda+xml"
    assert b"<ClinicalDocument" in base64.b64decode(form["data"])


def test_grouped_procedures_one_report(converter: Any) -> None:
    """Three OBRs, one dictation under the first: one report (mappings.md §7.6), v2.2, a glued OBX."""
    [b] = convert(converter, TESTDATA / "hl7v2-hapi" / "ORU-R01-v2.2-radiology-multiOBR.hl7")
    dr = one(b, "DiagnosticReport")
    assert dr["status"] == "preliminary"
    assert dr["identifier"][0]["value"] == "0000000566"
    [note] = [n["text"] for n in dr["note"]]
    assert note.startswith("This is a test on 05/02/94.\nThis is a test for the CRR.\n")
    assert one(b, "Practitioner")["name"][0]["family"] == "BAKER"


def test_multiple_reports_in_one_message(converter: Any) -> None:
    bs = convert(converter, TESTDATA / "hl7v2-linuxforhealth" / "ORU-multiple-reports-from-Hl7ORUMessageTest.hl7")
    assert len(bs) == 2
    ids = [one(b, "DiagnosticReport")["identifier"][0]["value"] for b in bs]
    assert ids == ["986", "98"]
    assert len({b["id"] for b in bs}) == 2


def test_versions_share_report_identifier(converter: Any) -> None:
    """Preliminary -> final of one report: same report identifier, different Bundle (document instance)."""
    raw = (SCOUT / "scout-13-v2.7-Final-20250814-22.hl7").read_bytes()
    prelim = raw.replace(b"|Final|", b"|Prelim|").replace(b"|20250814120610||MR|", b"|20250814110000||MR|")
    [final_b] = bundles(converter.convert(raw))
    [prelim_b] = bundles(converter.convert(prelim))
    assert one(prelim_b, "DiagnosticReport")["status"] == "preliminary"
    assert one(final_b, "DiagnosticReport")["identifier"] == one(prelim_b, "DiagnosticReport")["identifier"]
    assert one(final_b, "DiagnosticReport")["id"] == one(prelim_b, "DiagnosticReport")["id"]
    assert final_b["id"] != prelim_b["id"] and final_b["identifier"] != prelim_b["identifier"]
    assert section(prelim_b, "18726-0") is not None


def test_rad28_hd_uids_and_leading_word_sections(converter: Any) -> None:
    """IHE RAD-28 style: UIDs as HD values, report text in "SR Text" rows whose first word names the section."""
    message = (
        b"MSH|^~\\&|RPTMGR|RAD1|IM|RAD1|20240102030405||ORU^R01|X1|P|2.3.1\r"
        b"PID|||P123^^^HOSP||DOE^JANE||19700101|F\r"
        b"OBR|1|PL1|FL1|71020^CHEST 2 VIEWS^C4|||20240102010000|||||||||||ACC99||||20240102030000||CR|F|||||||"
        b"DR1&RAD&ROBERT\r"
        b"OBX|1|HD|^SR Instance UID||1.2.3.4.5.6.7||||||F\r"
        b"OBX|2|HD|^Study Instance UID||1.2.840.99.1.2.3||||||F\r"
        b"OBX|3|TX|^SR Text||History Cough for three weeks.||||||F\r"
        b"OBX|4|TX|^SR Text||Findings The lungs are clear.~No effusion.||||||F\r"
        b"OBX|5|TX|^SR Text||Conclusions Normal chest.||||||F\r"
    )
    [b] = convert_bytes(converter, message)
    assert one(b, "ImagingStudy")["identifier"][0]["value"] == "urn:oid:1.2.840.99.1.2.3"
    assert one(b, "ServiceRequest")["identifier"][0]["value"] == "ACC99"  # OBR-18 by default
    assert one(b, "ImagingStudy")["modality"][0]["coding"][0]["code"] == "CR"
    assert section_note(b, "11329-0") == "History Cough for three weeks."
    assert section_note(b, "59776-5") == "Findings The lungs are clear.\nNo effusion."
    assert section_note(b, "55110-1") == "Conclusions Normal chest."
    assert one(b, "Practitioner")["name"][0] == {"family": "RAD", "given": ["ROBERT"]}


def convert_bytes(converter: Any, data: bytes) -> list[dict[str, Any]]:
    result = converter.convert(data)
    assert not result.rejections, [r.reason for r in result.rejections]
    return bundles(result)


def test_same_report_id_for_another_patient_is_a_new_document(converter: Any) -> None:
    """scout-01 and scout-27 reuse filler order NONSENSE100 for different patient ids: same report identity,
    two document instances (a resend for another patient must never overwrite the first one)."""
    [a] = convert(converter, SCOUT / "scout-01-v2.3-nostatus-20260329-4.hl7")
    [b] = convert(converter, SCOUT / "scout-27-v2.7-nostatus-20260329-6.hl7")
    assert one(a, "DiagnosticReport")["identifier"] == one(b, "DiagnosticReport")["identifier"]
    assert a["id"] != b["id"]
    assert one(a, "Patient")["identifier"][0]["value"] == "LTI_04"
    assert one(b, "Patient")["identifier"][0]["value"] == "LTI_05"
    assert "_birthDate" in one(b, "Patient")  # PID-7 holds a name in that message: no birth date is invented


def test_hl7_chapter7_narrative_battery(converter: Any) -> None:
    """HL7 v2.3 chapter 7 style: CE impressions without code, a local code, FT with \\.br\\, &REC, a bad OBR-7
    (11 digits) that must not become a date, OBR-25 F."""
    [b] = convert(converter, Path(__file__).with_name("data_chapter7.hl7"))
    dr = one(b, "DiagnosticReport")
    assert dr["status"] == "final" and "effectiveDateTime" not in dr
    assert dr["conclusion"] == "MASS LEFT LOWER LOBE\nINFILTRATE RIGHT LOWER LOBE\nHEART SIZE NORMAL"
    notes = {n["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]: n["text"] for n in dr["note"]}
    assert notes["59776-5"].endswith(
        "posterior segment of the LLL.\nA second, less well-defined infiltrate is seen in the RLL."
    )
    assert notes["18783-1"] == "REPEAT CHEST X-RAY 2 WEEKS"
    [coded] = resources(b, "Observation")
    assert coded["valueCodeableConcept"]["coding"][0]["code"] == "H20"
    assert one(b, "Patient")["identifier"][0]["system"] == "urn:oid:1.2.3.4"  # CX.4 HD with ISO universal id


def test_epic_single_line_word_status(converter: Any) -> None:
    """Epic-style v2.3 ORU on one line with spaces between segments, suffix-only OBX-3, word status."""
    raw = (
        b"MSH|^~\\&|EPIC|HOSP|RAD|HOSP|20240101120000||ORU^R01|123|P|2.3 PID|1||E123^^^EPIC^MRN||DOE^JOHN||19800101|M "
        b"ORC|RE|1013934470^EPC|OT63025 OBR|1|1013934470^EPC|OT63025|73000^X-RAY CLAVICLE^EXTEAP|||20240101110000"
        b"|||||||||123^ORDER^DOC||||||20240101115900|||Final|||||||456^READ^DOC OBX|1|ST|&GDT|1|Two views of the "
        b"left clavicle.||||||Final OBX|2|ST|&IMP|1|No fracture.||||||Final OBX|3|ST|&IMP|1|Normal study.||||||Final\r"
    )
    [b] = convert_bytes(converter, raw)
    dr = one(b, "DiagnosticReport")
    assert dr["status"] == "final" and dr["conclusion"] == "No fracture.\nNormal study."
    assert dr["identifier"][0]["value"] == "OT63025"
    assert one(b, "Practitioner")["name"][0]["family"] == "READ"
