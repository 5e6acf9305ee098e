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
