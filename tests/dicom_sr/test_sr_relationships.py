"""Children of SR content items by relationship type (PS3.3 C.17.3.2.4) reach the report (none dropped silently),
and units coded outside UCUM never get a UCUM code."""

from __future__ import annotations

from typing import Any

from tests.dicom_sr.builder import build_sr, code, container, item
from tests.dicom_sr.helpers import by_type, load, one

FINDINGS = code("121070", "DCM", "Findings")
FINDING = code("121071", "DCM", "Finding")
MASS = code("M-03000", "SRT", "Mass")
DIAMETER = code("81827009", "SCT", "Diameter")
MARGIN = code("405838007", "SCT", "Margin")
SPICULATED = code("129751004", "SCT", "Spiculated")
LATERALITY = code("272741003", "SCT", "Laterality")
LEFT = code("7771000", "SCT", "Left")
MM = code("mm", "UCUM", "millimeter")


def _findings_note(bundle: dict[str, Any]) -> str:
    for note in one(bundle, "DiagnosticReport").get("note", []):
        if any("59776-5" in str(ext) for ext in note.get("extension", [])):
            return str(note["text"])
    raise AssertionError("no findings note")


def _convert(converter: Any, data: bytes) -> dict[str, Any]:
    result = converter.convert(data)
    assert not result.rejections and not result.filtered, [r.reason for r in result.rejections]
    return load(result.outputs[0].body)


def test_related_items_of_a_finding_by_relationship_type(converter: Any) -> None:
    """Evidence (INFERRED FROM) and properties (HAS PROPERTIES) are lines after their source and, when coded or
    numeric, findings of their own; concept modifiers and context are lines only."""
    finding = item(
        "TEXT",
        FINDING,
        "Mass in the left upper lobe.",
        item("NUM", DIAMETER, ("12", MM), rel="INFERRED FROM"),
        item("TEXT", code("121071", "DCM", "Finding"), "Seen on the prior study too.", rel="INFERRED FROM"),
        item("CODE", MARGIN, SPICULATED, rel="HAS PROPERTIES"),
        item("CODE", LATERALITY, LEFT, rel="HAS CONCEPT MOD"),
        item("DATE", code("111060", "DCM", "Study Date"), "20261129", rel="HAS ACQ CONTEXT"),
        item("PNAME", code("121008", "DCM", "Person Observer Name"), "Reader^Rita", rel="HAS OBS CONTEXT"),
    )
    bundle = _convert(converter, build_sr(container(FINDINGS, finding)))
    assert _findings_note(bundle).splitlines() == [
        "Mass in the left upper lobe.",
        "Inferred from: Diameter: 12 mm",
        "Inferred from: Seen on the prior study too.",
        "Margin: Spiculated",
        "Laterality: Left",
        "Acquisition context: Study Date: 2026-11-29",
        "Observation context: Person Observer Name: Reader Rita",
    ]
    observations = {o["code"]["coding"][0]["display"]: o for o in by_type(bundle, "Observation")}
    assert observations["Diameter"]["valueQuantity"] == {
        "value": 12.0,
        "unit": "millimeter",
        "system": "http://unitsofmeasure.org",
        "code": "mm",
    }
    assert observations["Margin"]["valueCodeableConcept"]["coding"][0]["code"] == "129751004"
    assert "Laterality" not in observations  # a modifier of the finding's concept, not an observation


def test_nested_related_items_and_a_modifier_of_a_modifier(converter: Any) -> None:
    inner = item("CODE", LATERALITY, LEFT, item("TEXT", FINDING, "as dictated", rel="HAS PROPERTIES"),
                 rel="HAS CONCEPT MOD")  # fmt: skip
    finding = item("CODE", code("121071", "DCM", "Finding"), MASS, inner)
    bundle = _convert(converter, build_sr(container(FINDINGS, finding)))
    assert _findings_note(bundle).splitlines() == ["Finding: Mass", "Laterality: Left", "as dictated"]
    assert [o["code"]["coding"][0]["code"] for o in by_type(bundle, "Observation")] == ["121071"]


def test_pydicom_test_sr_inferred_from_text_and_modifiers(sr_bundle: Any) -> None:
    """The user tryout: test-SR.dcm's INFERRED FROM TEXT child of a TEXT item, and the concept modifiers of the
    items of a CONTINUOUS container (after its running text, which they would break)."""
    text = _findings_note(sr_bundle("test-SR.dcm"))
    lines = text.splitlines()
    assert lines[0] == "A mass of 3 cm was detected. A mass of 3 cm was detected."
    assert lines[1:4] == ["Code: Sample Code 1", "Code: Sample Code 2", "Code: Sample Code"]
    assert "Inferred from: Code: Inferred Sample Text" in lines
    assert lines.index("Inferred from: Code: Inferred Sample Text") > lines.index("Code: Sample Text")
    assert "Code: Sample Code 3" in lines and "Code: Sample Text 2" in lines  # modifiers of the key image


def test_private_unit_keeps_its_text_without_a_ucum_code(converter: Any, sr_bundle: Any) -> None:
    """DCMTK's private 99_OFFIS_DCMTK `cm` "Length Unit": `cm` reads like UCUM, but the private scheme does not
    define it as the UCUM unit, so no system/code is claimed (never invent a fact); the unit text stays."""
    diameters = [o for o in by_type(sr_bundle("test-SR.dcm"), "Observation") if "valueQuantity" in o]
    assert diameters and all(o["valueQuantity"] == {"value": 3.0, "unit": "Length Unit"} for o in diameters)
    finding = item("NUM", DIAMETER, ("7", code("cm", "99LOCAL", "")))  # private, no meaning: the code value
    bundle = _convert(converter, build_sr(container(FINDINGS, finding)))
    (obs,) = by_type(bundle, "Observation")
    assert obs["valueQuantity"] == {"value": 7.0, "unit": "cm"}


def test_a_headings_own_context_is_narrative_only(converter: Any) -> None:
    """TID 1001 observation context under a heading (who observed this section) is a line of the section, not a
    finding; it was skipped before."""
    heading = container(
        FINDINGS,
        item("CODE", code("121005", "DCM", "Observer Type"), code("121006", "DCM", "Person"), rel="HAS OBS CONTEXT"),
        item("PNAME", code("121008", "DCM", "Person Observer Name"), "Smith^John", rel="HAS OBS CONTEXT"),
        item("TEXT", FINDING, "No acute findings."),
    )
    bundle = _convert(converter, build_sr(heading))
    assert _findings_note(bundle).splitlines() == [
        "Observation context: Observer Type: Person",
        "Observation context: Person Observer Name: Smith John",
        "No acute findings.",
    ]
    assert not [o for o in by_type(bundle, "Observation") if o["code"]["coding"][0]["code"] == "121005"]
