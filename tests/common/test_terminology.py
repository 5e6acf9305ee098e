"""Codes from messages go under a standard system only when valid there (pipelines.common.terminology),
identifier types under v2-0203 only when table 0203 has them, section entries only where the EU slices
take their resource type."""

from __future__ import annotations

from pipelines.common import fhir
from pipelines.common.model import Ident
from pipelines.common.sections import entry_allowed, entry_section
from pipelines.common.terminology import dcm_ok, loinc_ok, snomed_ok, tho_code, valid_code
from pipelines.common.ucum import ucum_ok
from pipelines.hl7v2.datatypes import checked_system, cwe
from pipelines.hl7v2.er7 import Delimiters

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def test_identifier_type_only_table_0203_codes_under_its_system() -> None:
    for code in ("MR", "PI", "PT", "AN", "ACSN", "FILL", "PLAC"):
        ident = fhir.identifier(Ident(system="urn:x", value="1", type_code=code))
        assert ident["type"] == {"coding": [{"system": V2_0203, "code": code}]}
    assert fhir.identifier(Ident(system="urn:x", value="1", type_code="mr"))["type"]["coding"][0]["code"] == "MR"
    for local in ("MRN", "EE", "LOCAL-ID", "NNFRA"):
        ident = fhir.identifier(Ident(system="urn:x", value="1", type_code=local))
        assert ident["type"] == {"text": local}


def test_tho_tables() -> None:
    assert tho_code("v2-0203", "MRN") is None and tho_code("v2-0203", "EE") is None
    assert tho_code("v2-0074", "RAD") == "RAD" and tho_code("v2-0074", "ZZZ") is None
    assert tho_code("v3-ObservationInterpretation", "HH") == "HH"
    assert tho_code("v2-9999", "X") is None  # a table THO does not hold validates nothing


def test_loinc_snomed_dcm_ucum_checks() -> None:
    assert loinc_ok("59776-5") and loinc_ok("18748-4") and loinc_ok("LP173421-1")
    assert not loinc_ok("859776-5") and not loinc_ok("59776-4") and not loinc_ok("59776")
    assert snomed_ok("363679005") and snomed_ok("22298006")
    assert not snomed_ok("363679006") and not snomed_ok("T-D0050") and not snomed_ok("12345")
    assert dcm_ok("113014") and dcm_ok("CT") and not dcm_ok("has space") and not dcm_ok("x" * 17)
    for good in ("mm", "mm[Hg]", "cm2", "mL/s", "/min", "%", "{score}", "10*3/uL", "mGy.cm", "[hnsf'U]", "kg.m-2"):
        assert ucum_ok(good), good
    for bad in ("mmHg", "cc", "HU", "", "m m", "mg/(kg", "kg}"):
        assert not ucum_ok(bad), bad
    assert valid_code("http://loinc.org", "859776-5") is None
    assert valid_code("urn:oid:1.2.3", "anything") == "anything"


def test_cwe_codes_fall_back_to_local_systems() -> None:
    d = Delimiters()
    base = "urn:sid/site"
    concept = cwe("859776-5^Findings typo^LN~", d, base)
    assert concept.codings[0].system == "urn:sid/site/codesystem/LN"
    assert cwe("59776-5^Findings^LN", d, base).codings[0].system == "http://loinc.org"
    assert cwe("T-D0050^Chest^SRT", d, base).codings[0].system == "http://snomed.info/srt"
    interpretation = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    assert cwe("H^High^HL70078", d, base).codings[0].system == interpretation
    assert cwe("QQ^Odd^HL70078", d, base).codings[0].system == "urn:sid/site/codesystem/HL70078"
    assert cwe("M^Male^HL70001", d, base).codings[0].system == "http://terminology.hl7.org/CodeSystem/v2-0001"
    assert cwe("MRN^^HL70203", d, base).codings[0].system == "urn:sid/site/codesystem/HL70203"
    assert checked_system("UCUM", "mmHg", base) == "urn:sid/site/codesystem/UCUM"
    assert checked_system("", "x", base) is None


def test_section_entry_types() -> None:
    finding = {"resourceType": "Observation", "meta": {"profile": ["x/ObservationFindingEuImaging"]}}
    dose = {
        "resourceType": "Observation",
        "meta": {"profile": ["http://hl7.eu/fhir/imaging-r5/StructureDefinition/ObservationRadiationDoseEuImaging"]},
    }
    assert entry_allowed("findings", finding)
    # the IG's impression entry slicing (profile on $this) fails every entry in the official validator
    assert not entry_allowed("impression", finding) and entry_section("impression", finding) == "findings"
    assert not entry_allowed("recommendation", finding)
    assert entry_allowed("recommendation", {"resourceType": "ServiceRequest"})
    assert not entry_allowed("procedure", finding) and entry_allowed("procedure", dose)
    assert not entry_allowed("order", finding) and not entry_allowed("imagingstudy", finding)
    assert entry_allowed("report", finding) and entry_allowed("addendum", finding)
