"""FHIR R5 primitive datatype rules (pipelines.common.primitives): one test per datatype, checked against the
regex of the R5 core StructureDefinition where the datatype has one."""

from __future__ import annotations

import json
import re
import tarfile
from functools import cache

import pytest

from pipelines.common import primitives as prim
from tests.conftest import SHARED

CORE = SHARED / "fhir-packages" / "hl7.fhir.r5.core-5.0.0.tgz"


TYPES = ("string", "code", "id", "uri", "date", "dateTime", "instant", "positiveInt", "decimal")


@cache
def _core_regexes() -> dict[str, re.Pattern[str]]:
    """The ``regex`` extension of ``<datatype>.value`` in the R5 core package (the validator's own rule),
    read in one pass over the package."""
    if not CORE.is_file():
        pytest.skip("R5 core package not present")
    wanted = {f"package/StructureDefinition-{t}.json": t for t in TYPES}
    out: dict[str, re.Pattern[str]] = {}
    with tarfile.open(CORE) as tgz:
        for member in tgz:
            datatype = wanted.get(member.name)
            if datatype is None:
                continue
            f = tgz.extractfile(member)
            assert f is not None
            for el in json.load(f)["snapshot"]["element"]:
                if el["path"] == f"{datatype}.value":
                    for t in el["type"]:
                        for ext in t.get("extension", []):
                            if ext["url"].endswith("regex"):
                                out[datatype] = re.compile(ext["valueString"])
            if len(out) == len(TYPES):
                break
    return out


def core_regex(datatype: str) -> re.Pattern[str]:
    return _core_regexes()[datatype]


def test_string_and_markdown_control_characters() -> None:
    assert prim.string("plain text") == "plain text"
    assert prim.string("tab\tand\nline") == "tab\tand\nline"
    assert prim.string("a\x00b\x01c\x1fd\x7fe") == "abcde"
    assert prim.string("page\x0cbreak\x0bvtab") == "page\nbreak\nvtab"
    assert prim.string("cr\r\nlf\rdone") == "cr\nlf\ndone"
    assert prim.string("cr\r\x00\nlf") == "cr\nlf"  # CR NUL LF: one break
    assert prim.string("c1\x85kept\ufffe\uffff") == "c1\x85kept"  # C1 is allowed; XML non-characters are not
    assert prim.string("multi\nline\x01 text ä\n") == "multi\nline text ä\n"
    assert prim.string("Gefäßstatus") == "Gefäßstatus"
    assert prim.markdown("**x**\x07") == "**x**"
    for s in ("a\x00b", "x\x0c", "\x1b[0m"):
        cleaned = prim.string(s)
        assert not any(ord(c) < 0x20 and c not in "\t\n\r" for c in cleaned)
        assert core_regex("string").fullmatch(cleaned or "x")


def test_code() -> None:
    assert prim.code("MR") == "MR"
    assert prim.code("  two  words ") == "two words"
    assert prim.code("a\tb\nc") == "a b c"
    assert prim.code("x\x00y") == "xy"
    assert prim.code(" \x01 ") == ""
    for value in ("MR", "two words", "71020&IMP"):
        assert core_regex("code").fullmatch(prim.code(value))


def test_id() -> None:
    assert prim.id_("3fb2146f-e304-5abd-a570-18caffd37d4a") == "3fb2146f-e304-5abd-a570-18caffd37d4a"
    assert prim.id_("1.2.840.10008.5.1.4.1.1.88.22") == "1.2.840.10008.5.1.4.1.1.88.22"
    for bad in ("", "has space", "x" * 65, "under_score", "urn:uuid:1"):
        with pytest.raises(ValueError):
            prim.id_(bad)
    assert core_regex("id").fullmatch(prim.id_("a-b.C9"))


def test_uri() -> None:
    assert prim.uri("urn:oid:1.2.3") == "urn:oid:1.2.3"
    assert prim.uri(" http://example.org/a b\t") == "http://example.org/a%20b"
    assert prim.uri("urn:x\x00y") == "urn:xy"
    assert core_regex("uri").fullmatch(prim.uri("http://a b/c"))


def test_date() -> None:
    for ok in ("2024", "2024-02", "2024-02-29"):
        assert prim.date(ok) == ok
        assert core_regex("date").fullmatch(ok)
    for bad in ("2023-02-29", "2024-13", "2024-00-10", "0000", "20240101", "2024-1-1", "2024-04-31"):
        assert prim.date(bad) is None


def test_date_time() -> None:
    rx = core_regex("dateTime")
    cases = {
        "2024": "2024",
        "2024-05": "2024-05",
        "2024-05-02": "2024-05-02",
        "1994-05-02T15:45+00:00": "1994-05-02T15:45:00+00:00",  # seconds required once a time is given
        "1994-05-02T15:45": "1994-05-02T15:45:00+01:00",  # offset required: the caller's default
        "2024-05-02T15:45:10Z": "2024-05-02T15:45:10Z",
        "2024-05-02T15:45:10.123456789-05:00": "2024-05-02T15:45:10.123456789-05:00",
        "2024-05-02T15:45:10.5": "2024-05-02T15:45:10.5+01:00",
        "2024-05-02T23:59:60+14:00": "2024-05-02T23:59:60+14:00",
    }
    for value, right in cases.items():
        assert prim.date_time(value, "+01:00") == right, value
        assert rx.fullmatch(right)
    for bad in ("2024-05-02T24:00:00Z", "2024-05-02T15", "2024-02-30T10:00:00Z", "2024-05-02T10:00:00+15:00",
                "2024-05-02 10:00:00", "2024-05-02T10:00:00.1234567890Z", "yesterday"):  # fmt: skip
        assert prim.date_time(bad) is None, bad
    assert prim.date_time("2024-05-02T10:00", "local") is None  # an invalid default offset is not used


def test_instant() -> None:
    rx = core_regex("instant")
    for value, right in {
        "2024-05-02T15:45:10+02:00": "2024-05-02T15:45:10+02:00",
        "2024-05-02T15:45": "2024-05-02T15:45:00+00:00",
    }.items():
        assert prim.instant(value) == right
        assert rx.fullmatch(right)
    # a bare date has no time of day: never midnight (a time the source never sent)
    for bad in ("2024", "2024-05", "2024-05-02", "2024-05-32"):
        assert prim.instant(bad) is None


def test_integers_and_decimal() -> None:
    assert prim.positive_int(1) == 1 and prim.positive_int(0) is None and prim.positive_int(2**31) is None
    assert prim.unsigned_int(0) == 0 and prim.unsigned_int(-1) is None
    assert prim.integer(-(2**31)) == -(2**31)
    with pytest.raises(ValueError):
        prim.integer(2**31)
    assert prim.decimal(1.5) == 1.5 and prim.decimal(3) == 3
    assert prim.decimal(float("nan")) is None and prim.decimal(float("inf")) is None
    assert core_regex("positiveInt").fullmatch(str(prim.positive_int(42)))
    assert core_regex("decimal").fullmatch(json.dumps(prim.decimal(0.25)))


def test_xhtml_narrative_div() -> None:
    div = prim.narrative_div("a < b & c\x00\nline\x0ctwo", heading="H\x07")
    assert div == (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>H</b></p><p>a &lt; b &amp; c<br/>line<br/>two</p></div>'
    )


def test_clean_tree() -> None:
    tree = {"a": ["x\x00", {"b": "y\x0cz"}], "n": 1, "t": True}
    assert prim.clean_tree(tree) == {"a": ["x", {"b": "y\nz"}], "n": 1, "t": True}
