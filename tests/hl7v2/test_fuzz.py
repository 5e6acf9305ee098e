"""Mutation fuzzing of the HL7 path: whatever the bytes, `convert` returns outputs or one-line rejections,
never an exception; every Bundle it does emit still conforms."""

from __future__ import annotations

import json
import random
from typing import Any

from tests.conftest import TESTDATA, profile_errors

SAMPLES = [
    p.read_bytes()
    for p in sorted((TESTDATA / "hl7v2-washu-scout" / "messages").glob("*.hl7"))[::4]
    + sorted((TESTDATA / "hl7v2-dcm4che").glob("ORU*.hl7"))
]
TOKENS = [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\x0b", b"\x1c", b"\\X0D\\", b"\\.br\\", b"MSH|", b"OBX|",
          b"\xff\xfe", b"\xc3", b"\x00", b"ZDS|1.2.3", b"OBR|", b"PID|"]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(buf) + 1)
        if op < 0.3 and buf:
            del buf[pos : pos + rng.randint(1, 40)]
        elif op < 0.6:
            buf[pos:pos] = rng.choice(TOKENS)
        elif op < 0.8 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        else:
            cut = rng.randrange(len(buf) + 1)
            buf = buf[:cut]
    return bytes(buf)


def test_mutated_messages_never_raise(converter: Any, fhir_validator: Any) -> None:
    rng = random.Random(20261123)
    emitted: list[bytes] = []
    for i in range(600):
        data = mutate(rng, rng.choice(SAMPLES))
        result = converter.convert(data)  # must not raise
        assert result.messages >= 1
        for rej in result.rejections:
            assert rej.reason and "\n" not in rej.reason and "Traceback" not in rej.reason
        for out in result.outputs:
            bundle = json.loads(out.body)
            assert bundle["id"] == out.bundle_id
            if i % 10 == 0:
                emitted.append(out.body)
    assert emitted
    for body in emitted[:40]:
        assert not profile_errors(fhir_validator, json.loads(body))
