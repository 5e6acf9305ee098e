"""Helpers for the transaction-model tests: convert with a model, pick entries, decode JSON patches."""

from __future__ import annotations

import base64
import json
from typing import Any

from engine.convert import Converter
from tests.conftest import TESTDATA
from tests.models.oru_factory import SR_FILE, context


def convert(data: bytes, model: str) -> list[dict[str, Any]]:
    result = Converter(context(), model).convert(data)
    assert not result.rejections, [r.reason for r in result.rejections]
    return [json.loads(o.body) for o in result.outputs]


def one_bundle(data: bytes, model: str) -> dict[str, Any]:
    out = convert(data, model)
    assert len(out) == 1
    return out[0]


def sr_bytes() -> bytes:
    return (TESTDATA / SR_FILE).read_bytes()


def entries(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def entry(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = entries(bundle, rtype)
    assert len(found) == 1, f"expected one {rtype}, found {len(found)}"
    return found[0]


def patch_ops(e: dict[str, Any]) -> list[dict[str, Any]]:
    res = e["resource"]
    assert res["resourceType"] == "Binary" and res["contentType"] == "application/json-patch+json"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(res["data"]))
    return ops


def request_key(e: dict[str, Any]) -> tuple[str, str, str]:
    """(method, url, ifNoneExist): what decides which server resource an entry lands on."""
    req = e["request"]
    return req["method"], req["url"], req.get("ifNoneExist", "")
