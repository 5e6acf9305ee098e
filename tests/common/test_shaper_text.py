"""Every string the shapers write is a clean FHIR string, whatever the source put in the neutral model (DICOM
SR text included): the shapers enforce the primitive rules as they build, pre-built extras included."""

from __future__ import annotations

import json

from pipelines.common.model import (
    Attachment,
    Coding,
    Concept,
    ExtraResource,
    Finding,
    Ident,
    Order,
    Organization,
    Patient,
    Person,
    Report,
    Section,
    Study,
)
from pipelines.output import serialize, shape
from tests.fhir_strings import strings

BAD = "x\x00\x01\x07\x0b\x0c\x1b\x1f\x7f\r\ny"
FORBIDDEN = {chr(c) for c in range(0x20)} - {"\t", "\n", "\r"}


def report(with_study: bool) -> Report:
    code = Concept(codings=(Coding(code="C" + BAD, system="urn:x", display="D" + BAD),), text="T" + BAD)
    return Report(
        source="dicom-sr",
        identifier=Ident(system="urn:x", value="R" + BAD),
        version_key="v1",
        status="final",
        patient=Patient(
            identifiers=[Ident(system="urn:p", value="P" + BAD, type_code="MR")],
            family="F" + BAD,
            given=["G" + BAD],
            birth_date="1970-01-01",
        ),
        title="Title" + BAD,
        orders=[
            Order(
                accession=Ident(system="urn:a", value="A" + BAD, type_code="ACSN"),
                code=code,
                reason=code,
                requester=Person(family="Req" + BAD),
            )
        ],
        studies=[Study(uid="1.2.3.4", description="S" + BAD)] if with_study else [],
        interpreters=[Person(family="Doc" + BAD, given=["G" + BAD])],
        performer=Organization(name="Org" + BAD),
        issued="2024-05-02T10:00:00+02:00",
        effective="2024-05-02T09:30",
        sections=[Section(key="findings", text="Findings" + BAD), Section(key="impression", text="Imp" + BAD)],
        findings=[Finding(code=code, value_string="V" + BAD, section="recommendation")],
        conclusion="Conclusion" + BAD,
        presented_forms=[Attachment(content_type="application/pdf", data_b64="JVBERg==", title="PDF" + BAD)],
        extras=[
            ExtraResource(
                resource={
                    "resourceType": "Observation",
                    "id": "extra-1",
                    "status": "final",
                    "code": {"text": "E" + BAD},
                    "subject": {"reference": "@patient"},
                },
                section="procedure",
                in_result=True,
            )
        ],
    )


def test_every_shaped_string_is_clean() -> None:
    for with_study in (True, False):
        bundle, kind = shape(report(with_study))
        assert kind == ("document" if with_study else "minimal")
        for s in strings(json.loads(serialize(bundle))):
            assert not FORBIDDEN & set(s), repr(s)
        text = json.dumps(bundle, ensure_ascii=False)
        assert "x\\n\\n\\ny" in text  # VT, FF and CR LF became line breaks, the other controls were dropped


def test_entries_land_in_sections_that_take_them() -> None:
    bundle, _ = shape(report(True))
    comp = bundle["entry"][0]["resource"]
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    codes = {s["code"]["coding"][0]["code"]: s for s in comp["section"]}
    # the finding dictated under "recommendation" and the non-dose Observation under "procedure" are findings
    assert "entry" not in codes.get("18783-1", {})
    assert "entry" not in codes["55111-9"]
    findings = [by_url[e["reference"]]["resourceType"] for e in codes["59776-5"]["entry"]]
    assert findings.count("Observation") == 2
    dt = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert dt["effectiveDateTime"] == "2024-05-02T09:30:00+00:00"  # seconds and an offset added
