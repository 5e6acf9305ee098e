"""The tryout variants (tests/hl7v2/test_tryout_mapping.py) through the official HL7 validator, all four models,
in the suite's one validator run (tests/conformance/official.py ``register``): zero unwaived errors. profcheck
does not see every IG rule (the impression section's ``$this`` slicing was found only by the official one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.convert import Converter
from pipelines.context import MappingContext
from tests.conformance.official import register
from tests.hl7v2.test_field_reports import message

GDT = "OBX|2|TX|71020&GDT|1|Heart size normal.||||||F"
IMP = "OBX|3|TX|71020&IMP|1|No acute process.||||||F"
MODELS = ("document", "rest", "harmonized", "imr")


def _variants() -> dict[str, bytes]:
    base = message(GDT, IMP)
    return {
        "obr4-loinc-cpt": message(GDT, IMP, obr4="36643-5^XR Chest 2 Views^LN^71020^CHEST XRAY^CPT4^^^Chest 2 views"),
        "date-only-obr22": base.replace(b"|20261130101000+0100||CR|", b"|20261130||CR|"),
        "no-time-of-day": base.replace(b"|20261130101500+0100||ORU", b"|20261130||ORU").replace(
            b"|20261130101000+0100||CR|", b"||CR|"),
        "offset-from-msh7": base.replace(b"|20261130093000+0100|", b"|202611300930|"),
        "sn-and-dates": message(GDT, "OBX|3|SN|21889-1^Size Tumor^LN|1|<^5~>=^7.5|mm^^UCUM|||||F|||20261129080000",
                                "OBX|4|DT|11778-8^Estimated delivery date^LN|1|20270115||||||F",
                                "OBX|5|TM|8000-0^Time^99LOCAL|1|0930||||||F"),
        "coded-impression": message(GDT, "OBX|3|CWE|71020&IMP|1|R91.8^Lung nodule^I10||||||F"),
        "cancelled": message(GDT, IMP, obr25="X"),
        "entered-in-error": message(GDT, IMP, obr25="W"),
        "null-and-names": message(GDT, 'OBX|3|TX|71020&IMP|1|""||||||F',
                                  pid5="Testperson^Anna^^^^^L~Maiden^Anna^^^^^M").replace(
            b"||19700101|F", b"||197001011230|F"),
        "prt-interpreter": message(GDT, IMP, obr32="").replace(
            b"\rOBX|1|", b"\rPRT|1|AD||PRI^Principal Result Interpreter^HL70912|RAD9^Prtreader^Paula\rOBX|1|"),
        "obr8-and-rp": message(GDT, "OBX|3|RP|PDF^Report^L|1|https://ris.hospital-north.eu/r/1.pdf^RIS^application^pdf"
                                    "||||||F").replace(b"|20261130093000+0100|||", b"|20261130093000+0100|"
                                                       b"20261130094500+0100||"),
        "empty-obx2": message("OBX|2||71020&GDT|1|Lungs clear.||||||F", "OBX|3||71020&IMP|1|Normal.||||||F"),
    }


def _outputs(folder: Path) -> None:
    for model in MODELS:
        converter = Converter(MappingContext(), model)
        for name, data in _variants().items():
            result = converter.convert(data)
            for i, output in enumerate(result.outputs):
                (folder / f"{model}-{name}-{i}.json").write_bytes(output.body)


register("tryout-variants", _outputs)


def test_tryout_variants_conform(official_validation: Any) -> None:
    report = official_validation.group("tryout-variants")
    names = {Path(str(f)).name for f in report}
    assert any(n.startswith("document-coded-impression") for n in names)
    assert sum(n.startswith("document-") for n in names) == len(_variants())
    assert not official_validation.errors_in(report), official_validation.describe(report)


def test_variants_convert_in_every_model() -> None:
    """Every variant converts in every model but two that a model cannot express (no issue time: rest needs
    DocumentReference.date and IMR issued, both instants); those are rejected with the reason."""
    for model in MODELS:
        converter = Converter(MappingContext(), model)
        for name, data in _variants().items():
            result = converter.convert(data)
            if name == "no-time-of-day" and model in ("rest", "imr"):
                assert not result.outputs and result.rejections, (model, name)
            else:
                assert result.outputs and not result.rejections, (model, name, [r.reason for r in result.rejections])
                assert all(json.loads(o.body)["resourceType"] == "Bundle" for o in result.outputs)
