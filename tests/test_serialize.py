"""``pipelines.output.serialize`` (orjson) writes exactly the bytes of ``json.dumps`` (golden outputs depend on it)."""

from __future__ import annotations

import json
import random
from typing import Any

from pipelines.output import serialize


def _reference(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_same_bytes_as_json_dumps() -> None:
    rng = random.Random(7)
    text = "".join(chr(i) for i in range(0x80)) + "\u2028\u2029é\ue000\U0001f600 urn:uuid:3e4f-1e5"
    floats = [1e16, 1e-7, 2.5e-5, 0.1, 1 / 3, -0.0, 100.0, 5e-324, 1.7976931348623157e308, 12.5, 0.0001]
    floats += [(10 ** rng.uniform(-30, 30)) * rng.choice((1, -1)) for _ in range(3000)]
    for value in floats:
        doc = {"resourceType": "Observation", "valueQuantity": {"value": value, "unit": "mm"}, "x": [value, 1]}
        assert serialize(doc) == _reference(doc), value
    doc = {"text": text, "n": [0, -1, 2**63 - 1, True, False, None], "big": 2**70, "nested": [{"a": {"b": []}}]}
    assert serialize(doc) == _reference(doc)
