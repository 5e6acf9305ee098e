"""Mapping faults found by the user tryout (README "Mapping fixes from the user tryout"): variants of the shared
samples and field reports the way real senders write them. Each test names the right value and its rule, and
fails on the engine before its fix."""

from __future__ import annotations

from typing import Any

import pytest

from engine.convert import Converter
from pipelines.context import MappingContext
from tests.conftest import profile_errors
from tests.hl7v2.helpers import bundles, one, resources
from tests.hl7v2.test_field_reports import convert_one, message

GDT = "OBX|2|TX|71020&GDT|1|Heart size normal.||||||F"
IMP = "OBX|3|TX|71020&IMP|1|No acute process.||||||F"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"


# --- DiagnosticReport.code / Composition.type name the procedure OBR-4 names -----------------------------------


def _codings(concept: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(c.get("system"), c["code"]) for c in concept.get("coding", [])]


@pytest.mark.parametrize(
    ("obr4", "codings", "text"),
    [
        ("71020^CHEST XRAY 2 VIEWS^CPT4", [(LOINC, "18748-4"), (CPT, "71020")], None),
        (  # a LOINC procedure code and a CPT alternate (CWE triplets 1 and 2), CWE.9 original text
            "36643-5^XR Chest 2 Views^LN^71020^CHEST XRAY AP \\T\\ LAT^CPT4^^^Chest two views",
            [(LOINC, "18748-4"), (LOINC, "36643-5"), (CPT, "71020")],
            "Chest two views",
        ),
        ("18748-4^Diagnostic imaging study^LN", [(LOINC, "18748-4")], None),  # never twice
        ("^CT HEAD WITHOUT CONTRAST", [(LOINC, "18748-4")], "CT HEAD WITHOUT CONTRAST"),
    ],
)
def test_report_code_names_the_ordered_procedure(
    converter: Any, fhir_validator: Any, obr4: str, codings: list[tuple[str, str]], text: str | None
) -> None:
    """EU DiagnosticReportEuImaging.code is bound (preferred) to the LOINC report types; v2-to-FHIR maps OBR-4
    to it (mappings.md §1.6, §2.5, §7.12): 18748-4 first, OBR-4 as extra codings and text. Was: 18748-4 only,
    whatever the message named. Composition.type equals DiagnosticReport.code (hl7eu-im-dr-code)."""
    b = convert_one(converter, message(GDT, IMP, obr4=obr4))
    dr, comp = one(b, "DiagnosticReport"), one(b, "Composition")
    assert _codings(dr["code"]) == codings
    assert dr["code"].get("text") == text
    assert comp["type"] == dr["code"]
    assert not profile_errors(fhir_validator, b)


def test_text_only_procedure_is_the_title_and_study_description(converter: Any) -> None:
    """A code-less OBR-4 (``^CT HEAD WITHOUT CONTRAST``) names the report as a coded one does. Was: title
    "Imaging report" and no ImagingStudy.description."""
    b = convert_one(converter, message(GDT, obr4="^CT HEAD WITHOUT CONTRAST"))
    assert one(b, "Composition")["title"] == "CT HEAD WITHOUT CONTRAST"
    assert one(b, "ImagingStudy")["description"] == "CT HEAD WITHOUT CONTRAST"
    b = convert_one(converter, message(GDT, obr4="71020^CHEST XRAY 2 VIEWS^CPT4^^^^^^Chest, two views"))
    assert one(b, "Composition")["title"] == "CHEST XRAY 2 VIEWS"
    assert one(b, "ImagingStudy")["description"] == "CHEST XRAY 2 VIEWS"


def test_empty_obr4_keeps_the_plain_report_type(converter: Any) -> None:
    b = convert_one(converter, message(GDT, obr4=""))
    assert _codings(one(b, "DiagnosticReport")["code"]) == [(LOINC, "18748-4")]
    assert one(b, "Composition")["title"] == "Imaging report"


@pytest.mark.parametrize("model", ["rest", "imr"])
def test_report_code_in_other_models(model: str) -> None:
    result = Converter(MappingContext(), model).convert(message(GDT, IMP))
    assert not result.rejections, [r.reason for r in result.rejections]
    reports = [r for b in bundles(result) for r in resources(b, "DiagnosticReport")] if model == "imr" else [
        r for b in bundles(result) if b["type"] == "document" for r in resources(b, "DiagnosticReport")
    ]
    assert reports and all((CPT, "71020") in _codings(r["code"]) for r in reports)


# --- times: no midnight that was never sent, the sender's own offset --------------------------------------------

MSH7 = b"|20261130101500+0100||ORU^R01"
OBR7, OBR22 = b"|20261130093000+0100|", b"|20261130101000+0100||CR|"


def _timed(msh7: bytes, obr7: bytes, obr22: bytes, *obx: str) -> bytes:
    data = message(*(obx or (GDT, IMP)))
    assert MSH7 in data and OBR7 in data and OBR22 in data
    return (
        data.replace(MSH7, b"|" + msh7 + b"||ORU^R01")
        .replace(OBR7, b"|" + obr7 + b"|")
        .replace(OBR22, b"|" + obr22 + b"||CR|")
    )


def _all_strings(b: dict[str, Any]) -> list[str]:
    from tests.fhir_strings import strings

    return list(strings(b))


def test_date_only_obr22_takes_the_message_time_never_midnight(converter: Any, fhir_validator: Any) -> None:
    """OBR-22 ``20261130`` (DTM of day precision, HL7 v2.5.1 2.A.22) has no time: ``issued`` and
    ``Bundle.timestamp`` (FHIR instants) come from MSH-7, which has one; Composition.date keeps the day. Was:
    ``2026-11-30T00:00:00+01:00``, a time never sent."""
    b = convert_one(converter, _timed(b"20261130101500+0100", b"20261130093000+0100", b"20261130"))
    assert b["type"] == "document"
    assert b["timestamp"] == one(b, "DiagnosticReport")["issued"] == "2026-11-30T10:15:00+01:00"
    assert one(b, "Composition")["date"] == "2026-11-30"
    assert not any("T00:00:00" in s for s in _all_strings(b))
    assert not profile_errors(fhir_validator, b)


@pytest.mark.parametrize(("msh7", "obr22"), [(b"20261130", b"20261130"), (b"", b""), (b"20261130", b"")])
def test_no_issue_time_of_day_gives_the_minimal_bundle(
    converter: Any, fhir_validator: Any, msh7: bytes, obr22: bytes
) -> None:
    """No instant for ``Bundle.timestamp`` (a document needs one, bdl-10) and midnight would be invented: the
    report goes out as the minimal-metadata ``collection`` Bundle (timestamp optional) with its text. Was: a
    midnight timestamp and issued (date-only), or a document Bundle failing bdl-10 (no MSH-7, no OBR-22)."""
    b = convert_one(converter, _timed(msh7, b"20261130", obr22))
    assert b["type"] == "collection" and "timestamp" not in b
    dr = one(b, "DiagnosticReport")
    assert "issued" not in dr
    assert [n["text"] for n in dr["note"]] == ["Heart size normal.", "No acute process."]
    assert dr["conclusion"] == "No acute process."
    assert not any("T00:00:00" in s for s in _all_strings(b))
    assert not profile_errors(fhir_validator, b)


def test_no_issue_time_in_imr_is_a_clear_rejection() -> None:
    result = Converter(MappingContext(), "imr").convert(_timed(b"20261130", b"20261130", b"20261130"))
    assert not result.outputs
    reasons = [r.reason for r in result.rejections]
    assert reasons == ["IMR needs DiagnosticReport.issued: the report has no sign-off time"]


def test_times_without_offset_are_in_the_zone_msh7_declares(converter: Any, fhir_validator: Any) -> None:
    """DTM without an offset is in the sender's local zone (HL7 v2.5.1 2.A.22); MSH-7 ``+0100`` says which when
    the sender profile does not. Was: ``+00:00`` (the deployment default), an instant one hour off."""
    b = convert_one(converter, _timed(b"20261130101500+0100", b"202611300930", b"2026113010"))
    assert one(b, "DiagnosticReport")["effectiveDateTime"] == "2026-11-30T09:30:00+01:00"
    assert b["timestamp"] == one(b, "DiagnosticReport")["issued"] == "2026-11-30T10:00:00+01:00"
    assert "_effectiveDateTime" not in one(b, "DiagnosticReport")  # the zone is known: not uncertain
    assert not profile_errors(fhir_validator, b)
    west = convert_one(converter, _timed(b"20261130101500-0500", b"202611300930", b""))
    assert one(west, "DiagnosticReport")["effectiveDateTime"] == "2026-11-30T09:30:00-05:00"
    # no offset anywhere: the deployment default, marked uncertain (eu-imaging.md §2.5), as before
    none = convert_one(converter, _timed(b"20261130101500", b"202611300930", b""))
    dr = one(none, "DiagnosticReport")
    assert dr["effectiveDateTime"] == "2026-11-30T09:30:00+00:00" and "_effectiveDateTime" in dr


def test_sender_profile_zone_wins_over_msh7() -> None:
    north = {"name": "north", "sending_facility": "NORTHCLINIC", "timezone": "+02:00"}
    ctx = MappingContext.from_mapping({"senders": [north]})
    result = Converter(ctx).convert(_timed(b"20261130101500+0100", b"202611300930", b""))
    [b] = bundles(result)
    assert one(b, "DiagnosticReport")["effectiveDateTime"] == "2026-11-30T09:30:00+02:00"


# --- numeric results: SN comparators, the precision a number was written with -----------------------------------


def _quantities(b: dict[str, Any]) -> list[dict[str, Any]]:
    return [o["valueQuantity"] for o in resources(b, "Observation") if "valueQuantity" in o]


@pytest.mark.parametrize(
    ("vtype", "value", "quantity"),
    [
        ("SN", "<^5", {"value": 5, "comparator": "<"}),
        ("SN", ">=^7.5", {"value": 7.5, "comparator": ">="}),
        ("SN", ">^10", {"value": 10, "comparator": ">"}),
        ("SN", "<=^0.5", {"value": 0.5, "comparator": "<="}),
        ("SN", "=^12", {"value": 12}),
        ("SN", "^12", {"value": 12}),
        ("NM", "12", {"value": 12}),
        ("NM", "12.0", {"value": 12.0}),
        ("NM", "<5", {"value": 5, "comparator": "<"}),  # a sender writing SN in an NM row
    ],
)
def test_sn_comparator_and_precision_are_kept(
    converter: Any, fhir_validator: Any, vtype: str, value: str, quantity: dict[str, Any]
) -> None:
    """SN ``<^5`` is "less than 5" (HL7 v2.5.1 2.A.71 SN.1; v2-to-FHIR SN -> Quantity.comparator). Was: value 5
    without comparator, a fact the message did not state. ``12`` is the integer 12, not ``12.0`` (FHIR decimal
    precision is significant)."""
    row = f"OBX|3|{vtype}|21889-1^Size Tumor^LN|1|{value}|mm^millimeter^UCUM|||||F"
    b = convert_one(converter, message(GDT, row))
    [q] = _quantities(b)
    assert {k: q[k] for k in ("value", "comparator") if k in q} == quantity
    assert type(q["value"]) is type(quantity["value"])
    assert q["unit"] == "mm" and q["code"] == "mm"
    assert not profile_errors(fhir_validator, b)


@pytest.mark.parametrize(("value", "text"), [("<>^5", "<> 5"), ("^10^-^20", "10 - 20"), ("^1^:^2", "1 : 2")])
def test_sn_that_no_quantity_can_say_stays_text(converter: Any, value: str, text: str) -> None:
    """Not equal, ranges and ratios are never reduced to one number."""
    b = convert_one(converter, message(GDT, f"OBX|3|SN|21889-1^Size Tumor^LN|1|{value}|mm^^UCUM|||||F"))
    assert not _quantities(b)
    assert [o["valueString"] for o in resources(b, "Observation") if o["code"]["coding"][0]["code"] == "21889-1"] == [
        text
    ]


def test_comparator_makes_another_version(converter: Any) -> None:
    """``<5`` and ``5`` are different content: different Bundle ids (the version digest), while an unchanged
    report keeps the Bundle id it had before integers stayed integers."""
    ids = {
        convert_one(converter, message(GDT, f"OBX|3|SN|21889-1^Size^LN|1|{v}|mm^^UCUM|||||F"))["id"]
        for v in ("<^5", "^5")
    }
    assert len(ids) == 2


def test_sr_tid2000_num_keeps_its_precision(converter: Any) -> None:
    """The same kind in DICOM SR: a TID 2000 NUM ``12`` (DS, PS3.5 6.2) is 12, as TID 1500 measurements already
    were; was ``12.0``."""
    from tests.dicom_sr.builder import build_sr, code, container, item

    num = item("NUM", code("81827009", "SCT", "Diameter"), ("12", code("mm", "UCUM", "millimeter")))
    data = build_sr(container(code("121070", "DCM", "Findings"), num))
    [b] = bundles(converter.convert(data))
    [q] = _quantities(b)
    assert q["value"] == 12 and type(q["value"]) is int


# --- a result's own time (OBX-14) and date/time results --------------------------------------------------------


def test_obx14_is_the_findings_own_time(converter: Any, fhir_validator: Any) -> None:
    """OBX-14 (date/time of the observation) is the finding's effectiveDateTime (v2-to-FHIR OBX[Observation]);
    without it the report's OBR-7. Was: OBR-7 for every finding, a time at which nothing was measured."""
    own = "OBX|3|NM|21889-1^Size^LN|1|12|mm^^UCUM|||||F|||20261129080000+0100"
    plain = "OBX|4|NM|21889-2^Width^LN|1|7|mm^^UCUM|||||F"
    no_offset = "OBX|5|NM|21889-3^Depth^LN|1|3|mm^^UCUM|||||F|||202611290815"
    b = convert_one(converter, message(GDT, own, plain, no_offset))
    when = {o["code"]["coding"][0]["code"]: o["effectiveDateTime"] for o in resources(b, "Observation")}
    assert when["21889-1"] == "2026-11-29T08:00:00+01:00"
    assert when["21889-2"] == one(b, "DiagnosticReport")["effectiveDateTime"] == "2026-11-30T09:30:00+01:00"
    assert when["21889-3"] == "2026-11-29T08:15:00+01:00"  # the sender's zone (MSH-7)
    assert not profile_errors(fhir_validator, b)


@pytest.mark.parametrize(
    ("row", "element", "value"),
    [
        ("OBX|3|DT|11778-8^Estimated delivery date^LN|1|20270115||||||F", "valueDateTime", "2027-01-15"),
        ("OBX|3|DTM|11778-8^Estimated delivery date^LN|1|202701150930||||||F", "valueDateTime",
         "2027-01-15T09:30:00+01:00"),
        ("OBX|3|TS|11778-8^Estimated delivery date^LN|1|202701^M||||||F", "valueDateTime", "2027-01"),
        ("OBX|3|TM|8000-0^Time^99LOCAL|1|0930||||||F", "valueTime", "09:30:00"),
        ("OBX|3|TM|8000-0^Time^99LOCAL|1|0930+0100||||||F", "valueString", "0930+0100"),
        ("OBX|3|DT|11778-8^Estimated delivery date^LN|1|2027-01-15||||||F", "valueString", "2027-01-15"),
    ],
)
def test_date_and_time_results_are_dates_and_times(
    converter: Any, fhir_validator: Any, row: str, element: str, value: str
) -> None:
    """DT/DTM/TS results (HL7 v2.5.1 2.A.21/2.A.22) are a FHIR dateTime with the precision written, TM (2.A.75)
    a FHIR time; what is not one stays text as written. Was: ``"20270115"``/``"0930"`` as strings."""
    b = convert_one(converter, message(GDT, row))
    [obs] = [o for o in resources(b, "Observation") if o["code"]["coding"][0]["code"] in ("11778-8", "8000-0")]
    assert obs[element] == value
    assert not profile_errors(fhir_validator, b)


def test_section_text_renders_the_results_the_dictation_does_not_say(converter: Any, fhir_validator: Any) -> None:
    """CompositionEuImaging: "section text SHALL render all entries of the section". A measurement under a
    dictated findings section was in no narrative (the rendered document did not show it); a result whose
    value the dictation already says is not repeated. The section's note stays the dictation as sent."""
    size = "OBX|3|SN|21889-1^Size Tumor^LN|1|<^5|mm^^UCUM|||||F"
    said = "OBX|4|CWE|18782-3^Study observation^LN|1|RID5350^pneumonia^RADLEX||||||F"
    b = convert_one(converter, message("OBX|2|TX|71020&GDT|1|Findings: pneumonia.||||||F", size, said))
    [sec] = [s for s in one(b, "Composition")["section"] if s["code"]["coding"][0]["code"] == "59776-5"]
    assert sec["text"]["div"] == (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        "Findings: pneumonia.<br/>pneumonia<br/><br/>Size Tumor: &lt;5 mm</div>"
    )  # (a coded line's words join the dictation they were sent in, as before)
    assert sec["extension"][0]["valueAnnotation"]["text"] == "Findings: pneumonia.\npneumonia"
    assert not profile_errors(fhir_validator, b)


# --- a withdrawn report (cancelled, entered in error) publishes its status, never its text ---------------------

SECRET_GDT = "OBX|2|TX|71020&GDT|1|Withdrawn findings text.||||||{s}"
SECRET_IMP = "OBX|3|TX|71020&IMP|1|Withdrawn impression.||||||{s}"


def _published_text(b: dict[str, Any]) -> str:
    import base64

    text = "\n".join(_all_strings(b))
    for e in b.get("entry", []):
        for form in e.get("resource", {}).get("presentedForm", []):
            text += base64.b64decode(form.get("data", "")).decode("utf-8", "replace")
    return text


@pytest.mark.parametrize(
    ("obr25", "obx11", "status", "absent"),
    [
        ("X", "F", "cancelled", "not-performed"),  # table 0123 X: no results available; order canceled
        ("Cancelled", "F", "cancelled", "not-performed"),  # the word status (mappings.md §7.14)
        ("", "X", "cancelled", "not-performed"),  # every row table 0085 X: results cannot be obtained
        ("W", "F", "entered-in-error", "error"),  # OBR-25 W/D as RIS send them: the report was wrong
        ("D", "F", "entered-in-error", "error"),
    ],
)
def test_withdrawn_report_publishes_status_not_text(
    converter: Any, fhir_validator: Any, obr25: str, obx11: str, status: str, absent: str
) -> None:
    """Was: the cancelled / entered-in-error version republished the whole text (notes, sections, conclusion,
    anchor finding) under that status. FHIR: a cancelled report is unavailable, entered-in-error is not valid.
    The version still goes out (it supersedes the earlier ones), with the status and no report text."""
    data = message(SECRET_GDT.format(s=obx11), SECRET_IMP.format(s=obx11), obr25=obr25)
    b = convert_one(converter, data)
    assert "Withdrawn" not in _published_text(b)
    dr, comp = one(b, "DiagnosticReport"), one(b, "Composition")
    assert dr["status"] == comp["status"] == status
    assert "note" not in dr and "conclusion" not in dr
    [anchor] = resources(b, "Observation")
    assert anchor["status"] == status and "valueString" not in anchor
    assert anchor["dataAbsentReason"]["coding"][0]["code"] == absent
    if status == "cancelled":
        assert one(b, "ServiceRequest")["status"] == "revoked"  # v2-to-FHIR ORC-5 CA -> revoked; was completed
    assert not profile_errors(fhir_validator, b)
    for model in ("rest", "harmonized", "imr"):
        result = Converter(MappingContext(), model).convert(data)
        assert not result.rejections, (model, [r.reason for r in result.rejections])
        assert all("Withdrawn" not in _published_text(x) for x in bundles(result)), model


def test_a_cancelled_row_among_results_is_not_a_withdrawal(converter: Any) -> None:
    """One row that could not be obtained (OBX-11 X) in a final report does not withdraw the report."""
    b = convert_one(converter, message(GDT, "OBX|3|TX|71020&IMP|1|Comparison not available.||||||X"))
    assert one(b, "DiagnosticReport")["status"] == "final"
    assert "Heart size normal." in _published_text(b)


# --- repeating OBX-5, the HL7 null value ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "values"),
    [
        ("OBX|3|CWE|18782-3^Finding^LN|1|233604007^Pneumonia^SCT~195967001^Asthma^SCT||||||F",
         [("233604007",), ("195967001",)]),
        ("OBX|3|NM|21889-1^Size^LN|1|12~15|mm^^UCUM|||||F", [(12,), (15,)]),
        ("OBX|3|SN|21889-1^Size^LN|1|<^5~>^9|mm^^UCUM|||||F", [(5, "<"), (9, ">")]),
    ],
)
def test_repeating_result_values_are_each_a_finding(
    converter: Any, fhir_validator: Any, row: str, values: list[tuple[Any, ...]]
) -> None:
    """A repeating OBX-5 carries several results (HL7 v2.5.1 7.4.2.5; v2-to-FHIR: separate Observations). Was:
    the first kept, the others silently lost."""
    b = convert_one(converter, message(GDT, row))
    got = []
    for o in resources(b, "Observation"):
        if "valueCodeableConcept" in o:
            got.append((o["valueCodeableConcept"]["coding"][0]["code"],))
        elif "valueQuantity" in o:
            q = o["valueQuantity"]
            got.append((q["value"], q["comparator"]) if "comparator" in q else (q["value"],))
    assert got == values
    assert len({o["id"] for o in resources(b, "Observation")}) == len(resources(b, "Observation"))
    assert not profile_errors(fhir_validator, b)


def test_hl7_null_value_is_no_value(converter: Any, fhir_validator: Any) -> None:
    """``""`` is the HL7 null (v2.5.1 2.5.3: present and null), never the text of two quote marks. Was: an
    impression and a finding reading ``""``, a conclusion ``""``."""
    b = convert_one(
        converter,
        message(GDT, 'OBX|3|TX|71020&IMP|1|""||||||F', 'OBX|4|NM|21889-1^Size^LN|1|""|mm|||||F',
                pid5='Testperson^Anna^""'),
    )
    assert '""' not in _published_text(b)
    assert "conclusion" not in one(b, "DiagnosticReport")
    assert one(b, "Patient")["name"] == [{"family": "Testperson", "given": ["Anna"]}]
    assert [o.get("valueString") for o in resources(b, "Observation")] == ["Heart size normal."]
    assert not profile_errors(fhir_validator, b)


# --- v2.7+ participations (PRT) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("after_orc", [False, True])
def test_prt_principal_interpreter_and_ordering_provider(converter: Any, fhir_validator: Any, after_orc: bool) -> None:
    """HL7 v2.7+ moved OBR-32 and OBR-16 into PRT (ORDER_OBSERVATION: ORC [PRT] OBR [PRT]); PRT-4 ``PRI`` is the
    results interpreter, ``OP`` the ordering provider (mappings.md §1.1). Was: no interpreter (no author
    practitioner, no legal authenticator) and no requester. A PRT of an OBX is not the report's."""
    pri = "PRT|1|AD||PRI^Principal Result Interpreter^HL70912|RAD9^Prtreader^Paula"
    op = "PRT|2|AD||OP^Ordering Provider^HL70912|REF9^Orderer^Otto"
    obs_prt = "PRT|3|AD||PRI^Principal Result Interpreter^HL70912|RAD8^Other^Olga"
    data = message(GDT, obs_prt, obr32="").decode().replace("REF1^Referrer^Rolf", "")  # no OBR-16
    where = "\rOBR|" if after_orc else "\rOBX|1|"
    data = data.replace(where, f"\r{pri}\r{op}{where}")
    b = convert_one(converter, data.encode())
    [prac] = resources(b, "Practitioner")
    assert prac["name"] == [{"family": "Prtreader", "given": ["Paula"]}]
    assert one(b, "Composition")["attester"][0]["mode"]["coding"][0]["code"] == "legal"
    assert one(b, "ServiceRequest")["requester"] == {"display": "Otto Orderer"}
    assert not profile_errors(fhir_validator, b)


# --- patient demographics the message carries ----------------------------------------------------------------


def test_pid7_time_of_birth_is_kept(converter: Any, fhir_validator: Any) -> None:
    """PID-7 longer than a date is the time of birth (v2-to-FHIR: patient-birthTime on birthDate). Was dropped.
    An all-zero time is a padded date, no birth time."""
    b = convert_one(converter, message(GDT).replace(b"||19700101|F", b"||197001011230|F"))
    p = one(b, "Patient")
    assert p["birthDate"] == "1970-01-01"
    assert p["_birthDate"] == {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                              "valueDateTime": "1970-01-01T12:30:00+01:00"}]}
    assert not profile_errors(fhir_validator, b)
    padded = one(convert_one(converter, message(GDT).replace(b"||19700101|F", b"||19700101000000|F")), "Patient")
    assert padded["birthDate"] == "1970-01-01" and "_birthDate" not in padded


def test_every_pid5_name_with_its_use(converter: Any, fhir_validator: Any) -> None:
    """PID-5 repeats (legal, maiden, alias names; v2-to-FHIR PID-5 -> Patient.name, XPN.7 -> use via table 0200).
    Was: the first name only. A single name is written as before (no use)."""
    b = convert_one(converter, message(GDT, pid5="Testperson^Anna^^^^^L~Maiden^Anna^^^^^M~Nick^^^^^^N"))
    assert one(b, "Patient")["name"] == [
        {"use": "official", "family": "Testperson", "given": ["Anna"]},
        {"use": "maiden", "family": "Maiden", "given": ["Anna"]},
        {"use": "nickname", "family": "Nick"},
    ]
    assert not profile_errors(fhir_validator, b)
    single = convert_one(converter, message(GDT, pid5="Testperson^Anna^^^^^L"))
    assert one(single, "Patient")["name"] == [{"family": "Testperson", "given": ["Anna"]}]


def test_sr_patient_birth_time(converter: Any) -> None:
    """The same kind in DICOM: Patient's Birth Time (0010,0032) with the birth date."""
    import io

    import pydicom

    from tests.dicom_sr.builder import build_sr, code, container, item

    data = build_sr(container(code("121070", "DCM", "Findings"), item("TEXT", code("121071", "DCM", "Finding"), "x")))
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientBirthTime = "0745"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    [b] = bundles(converter.convert(buf.getvalue()))
    ext = one(b, "Patient")["_birthDate"]["extension"][0]
    assert ext["valueDateTime"].startswith("1970-01-01T07:45:00")


def test_no_issue_time_in_rest_is_a_clear_rejection() -> None:
    """Approach 1/2 wrap each document in a DocumentReference whose ``date`` is an instant (1..1): a report without
    an issue time of day cannot be one; it is rejected with that reason, never given a midnight."""
    result = Converter(MappingContext(), "rest").convert(_timed(b"20261130", b"20261130", b"20261130"))
    assert not result.outputs
    [reason] = [r.reason for r in result.rejections]
    assert reason.startswith("DocumentReference.date (an instant) cannot be filled") and "time of day" in reason


def test_sr_without_any_time_of_day_gives_the_minimal_bundle(converter: Any, fhir_validator: Any) -> None:
    """The same kind in DICOM SR: Verification DateTime, Content and Study dates without times (DT/DA of day
    precision) give no instant; was a document Bundle without timestamp (bdl-10 error)."""
    import io

    import pydicom

    from tests.dicom_sr.builder import build_sr, code, container, item

    data = build_sr(container(code("121070", "DCM", "Findings"), item("TEXT", code("121071", "DCM", "Finding"), "x.")))
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.StudyTime, ds.ContentTime
    ds.VerifyingObserverSequence[0].VerificationDateTime = "20261130"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    [b] = bundles(converter.convert(buf.getvalue()))
    assert b["type"] == "collection" and "timestamp" not in b
    dr = one(b, "DiagnosticReport")
    assert "issued" not in dr and [n["text"] for n in dr["note"]] == ["x."]
    assert not profile_errors(fhir_validator, b)


# --- attached documents: never dropped in silence -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        (["OBX|2|ED|PDF^Report^L|1|^application^pdf^Base64^@@@not base64@@@||||||F"],
         "OBX 2 (ED): the encapsulated document data is not valid Base64 (ED.4 Base64)"),
        ([GDT, "OBX|3|ED|PDF^Report^L|1|^application^pdf^Base64^@@@||||||F"],
         "OBX 3 (ED): the encapsulated document data is not valid Base64 (ED.4 Base64)"),
        ([GDT, "OBX|3|ED|PDF^Report^L|1|^application^pdf||||||F"], "OBX 3 (ED): the encapsulated document has no data"),
        ([GDT, "OBX|3|ED|PDF^Report^L|1|^text^plain^Hex^ZZ||||||F"],
         "OBX 3 (ED): the encapsulated document data is not valid hexadecimal"),
    ],
)
def test_unreadable_encapsulated_document_is_a_rejection(converter: Any, rows: list[str], reason: str) -> None:
    """An ED row whose document cannot be read (HL7 v2.5.1 2.A.24). Was: alone, the report was *filtered* as
    "no report content" (no dead letter: the message was gone); next to text, the report was published without
    its document and nothing said so. Now a rejection naming the row and why (dead letter keeps the bytes)."""
    result = converter.convert(message(*rows))
    assert not result.outputs
    [rejection] = result.rejections
    assert rejection.reason.startswith(reason)
    assert "not base64" not in rejection.reason  # never the content


def test_reference_pointer_url_is_the_presented_form(converter: Any, fhir_validator: Any) -> None:
    """An RP row whose pointer is a URL (2.A.65) references the report document: presentedForm url and type
    (v2-to-FHIR RP -> Attachment). Was silently dropped. Pointers that only the sender can resolve stay out."""
    rp = "OBX|3|RP|PDF^Report^L|1|https://ris.example.org/reports/1.pdf^RIS^application^pdf||||||F"
    b = convert_one(converter, message(GDT, rp))
    assert one(b, "DiagnosticReport")["presentedForm"] == [
        {"contentType": "application/pdf", "url": "https://ris.example.org/reports/1.pdf"}
    ]
    assert not profile_errors(fhir_validator, b)
    only = convert_one(converter, message(rp))  # the only content: the minimal-metadata Bundle, as for an ED
    assert only["type"] == "collection"
    assert one(only, "DiagnosticReport")["presentedForm"][0]["url"] == "https://ris.example.org/reports/1.pdf"


# --- character sets: declared and undeclared ------------------------------------------------------------------


def _in_charset(text: str, msh18: str, encoding: str) -> bytes:
    name = "山田^太郎" if encoding in ("iso2022_jp", "shift_jis") else "Łódź^Zażółć"
    data = message(f"OBX|2|TX|71020&GDT|1|{text}||||||F", pid5=name)
    head, rest = data.split(b"\r", 1)
    return (head + (b"||||||" + msh18.encode() if msh18 else b"") + b"\r" + rest).decode("utf-8").encode(encoding)


def test_bytes_invalid_in_the_declared_charset_are_a_rejection(converter: Any) -> None:
    """MSH-18 ``ISO IR87`` (table 0211: ISO 2022 JIS X 0208) with Shift-JIS bytes: not valid in the declared set
    nor UTF-8. Was: read as Latin-1 and published as mojibake (C1 controls in names and text). Now rejected with the
    reason, as the DICOM side does (field report 17's rule: decode as declared or reject)."""
    bad = _in_charset("肺野清明。", "ISO IR87", "shift_jis")
    result = converter.convert(bad)
    assert not result.outputs
    [rejection] = result.rejections
    assert rejection.reason.startswith("MSH-18 declares ISO IR87 (iso2022_jp) but the message bytes are not valid")
    good = convert_one(converter, _in_charset("肺野清明。", "ISO IR87", "iso2022_jp"))
    assert one(good, "Patient")["name"][0] == {"family": "山田", "given": ["太郎"]}
    assert "肺野清明。" in _published_text(good)


def test_sender_profile_charset_for_messages_without_msh18() -> None:
    """No MSH-18 and Windows-1250 bytes (a Polish RIS): the deployment says the site's set in the sender profile
    (``charset``: table 0211 value or codec). Was no way but the Windows-1252 guess: ``Za¿ó³æ`` published."""
    data = _in_charset("Zażółć gęślą jaźń.", "", "cp1250")
    plain = bundles(Converter(MappingContext()).convert(data))[0]
    assert "Zażółć" not in _published_text(plain)  # the documented default reading, unchanged
    north = {"name": "north", "sending_facility": "NORTHCLINIC", "charset": "windows-1250"}
    [b] = bundles(Converter(MappingContext.from_mapping({"senders": [north]})).convert(data))
    assert one(b, "Patient")["name"][0] == {"family": "Łódź", "given": ["Zażółć"]}
    assert "Zażółć gęślą jaźń." in _published_text(b)
    with pytest.raises(ValueError, match="charset"):
        MappingContext.from_mapping({"senders": [{**north, "charset": "klingon"}]})


def test_empty_obx2_on_a_report_section_row_is_text(converter: Any, fhir_validator: Any) -> None:
    """OBX-2 left empty (a conditional field senders skip) on ``71020&GDT`` / ``&IMP`` rows: the chapter 7 suffix
    says they are report text. Was: two findings coded ``71020&GDT`` / ``71020&IMP``, no sections, no impression,
    no conclusion."""
    b = convert_one(converter, message("OBX|2||71020&GDT|1|Lungs clear.||||||F", "OBX|3||71020&IMP|1|Normal.||||||F"))
    dr = one(b, "DiagnosticReport")
    assert [n["text"] for n in dr["note"]] == ["Lungs clear.", "Normal."]
    assert dr["conclusion"] == "Normal."
    assert not any("&" in o["code"]["coding"][0]["code"] for o in resources(b, "Observation"))
    assert not profile_errors(fhir_validator, b)


def test_obr8_ends_the_effective_period(converter: Any, fhir_validator: Any) -> None:
    """OBR-7 and OBR-8 (observation end) are ``effectivePeriod`` (v2-to-FHIR OBR -> DiagnosticReport). Was: the
    end dropped. An end before the start (FHIR per-1) is not published."""
    data = message(GDT).replace(b"|20261130093000+0100|||", b"|20261130093000+0100|20261130094500+0100||")
    b = convert_one(converter, data)
    dr = one(b, "DiagnosticReport")
    assert dr["effectivePeriod"] == {"start": "2026-11-30T09:30:00+01:00", "end": "2026-11-30T09:45:00+01:00"}
    assert "effectiveDateTime" not in dr
    assert not profile_errors(fhir_validator, b)
    backwards = message(GDT).replace(b"|20261130093000+0100|||", b"|20261130093000+0100|20261130080000+0100||")
    back = one(convert_one(converter, backwards), "DiagnosticReport")
    assert back["effectiveDateTime"] == "2026-11-30T09:30:00+01:00"


def test_coded_impression_is_the_conclusion_code(converter: Any, fhir_validator: Any) -> None:
    """An IMP row with a code is the report's coded conclusion (eu-imaging.md §2.3: impression <-> conclusion /
    conclusionCode). Was: only a finding in the impression section."""
    imp = "OBX|3|CWE|71020&IMP|1|R91.8^Lung nodule^I10||||||F"
    b = convert_one(converter, message(GDT, imp))
    dr = one(b, "DiagnosticReport")
    assert dr["conclusionCode"] == [
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "R91.8", "display": "Lung nodule"}]}
    ]
    assert not profile_errors(fhir_validator, b)
    text_only = message(GDT, "OBX|3|CE|71020&IMP|1|^Mass left lower lobe||||||F")
    plain = one(convert_one(converter, text_only), "DiagnosticReport")
    assert "conclusionCode" not in plain and plain["conclusion"] == "Mass left lower lobe"
