"""Independent cross-checks of the hot path against the reference libraries it does not use at run time:
hl7apy (ER7 parsing) for the tokenizer, fhir.resources (R5 pydantic models) for the emitted JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.hl7v2 import split_stream
from pipelines.hl7v2.er7 import decode_message, parse_message
from pipelines.hl7v2.fields import component, field
from tests.conftest import TESTDATA

SCOUT = sorted((TESTDATA / "hl7v2-washu-scout" / "messages").glob("*.hl7"))


@pytest.mark.parametrize("path", SCOUT[::3], ids=lambda p: p.name)
def test_tokenizer_agrees_with_hl7apy(path: Path) -> None:
    hl7apy_parser = pytest.importorskip("hl7apy.parser")
    text, _ = decode_message(path.read_bytes())
    ours = parse_message(text)
    ref = hl7apy_parser.parse_message(text.replace("\n", "\r"), find_groups=False, validation_level=2)
    d = ours.delimiters
    ref_segments = [s.name for s in ref.children]
    assert [s[0] for s in ours.segments] == ref_segments
    pid = ours.first("PID")
    assert pid is not None
    # hl7apy's attribute access returns the first repetition
    assert field(pid, 3).split(d.repetition)[0] == ref.pid.pid_3.to_er7()
    assert component(field(pid, 5), d, 1) == ref.pid.pid_5.to_er7().split("^")[0]
    for mine, theirs in zip(
        (s for s in ours.segments if s[0] == "OBX"), (s for s in ref.children if s.name == "OBX"), strict=True
    ):
        assert field(mine, 3) == theirs.obx_3.to_er7()
        assert field(mine, 5).split(d.repetition)[0] == theirs.obx_5.to_er7()


def test_emitted_bundles_validate_as_fhir_r5_models(converter: Any) -> None:
    bundle_model = pytest.importorskip("fhir.resources.bundle").Bundle
    data = (TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7").read_bytes()
    outputs = converter.convert(b"".join(c.data for c in split_stream(data)[:120])).outputs
    kinds = set()
    for out in outputs:
        model = bundle_model.model_validate_json(out.body)
        kinds.add(model.type)
        assert json.loads(model.model_dump_json())["id"] == out.bundle_id
    assert kinds == {"document", "collection"}
