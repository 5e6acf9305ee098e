"""Property-based tests (hypothesis) of the ER7 tokenizer and the escape decoder (HL7 v2.5.1 2.5.4, 2.7):

* for any field content and any declared separators, escaping then parsing gives the content back
  (as clean text: control characters removed, form feed / vertical tab / CR as line breaks);
* whatever the raw field text (escape sequences, hex escapes, control bytes), no decoded string and no
  converted Bundle ever holds a character below U+0020 other than TAB, CR, LF.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipelines.common.primitives import clean_text
from pipelines.hl7v2 import datatypes as dt
from pipelines.hl7v2.er7 import NONE, Delimiters, parse_message
from pipelines.hl7v2.fields import components, escape, field, repetitions, unescape
from tests.fhir_strings import strings

FORBIDDEN = frozenset(chr(c) for c in range(0x20)) - {"\t", "\n", "\r"}
SEPARATOR_CHARS = "|^~\\&#$*!@%`}{?+=:;'\"<>/,_"

content = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
# raw field text as senders write it: escapes, hex digits, separators and control characters mixed
RAW_CHARS = [*"\\XxZHN.brspkinticefn0123456789ABCDEFabcdef &^~|#", *"\x00\x01\x07\x0b\x0c\x1b\r\t\x85\x7féж€"]
raw_alphabet = st.sampled_from(RAW_CHARS)
raw_text = st.text(raw_alphabet, max_size=60)


@st.composite
def delimiters(draw: st.DrawFn) -> tuple[str, str]:
    """MSH-1 and an MSH-2 of 1 to 4 distinct encoding characters."""
    chars = draw(st.lists(st.sampled_from(SEPARATOR_CHARS), min_size=5, max_size=5, unique=True))
    size = draw(st.integers(min_value=1, max_value=4))
    return chars[0], "".join(chars[1 : 1 + size])


def build(fs: str, enc: str, pid5: str, obx5: str) -> str:
    return (
        f"MSH{fs}{enc}{fs}RIS{fs}FAC{fs}EHR{fs}FAC{fs}20260101120000{fs}{fs}ORU{fs}1{fs}P{fs}2.5.1\r"
        f"PID{fs}1{fs}{fs}ID1{fs}{fs}{pid5}\r"
        f"OBR{fs}1\r"
        f"OBX{fs}1{fs}TX{fs}GDT{fs}1{fs}{obx5}\r"
    )


def no_control(value: str) -> bool:
    return not (FORBIDDEN & set(value))


@settings(max_examples=300, deadline=None, database=None)
@given(delims=delimiters(), family=content, given_name=content, text=content)
def test_escape_then_parse_gives_the_content_back(
    delims: tuple[str, str], family: str, given_name: str, text: str
) -> None:
    fs, enc = delims
    msg = parse_message(build(fs, enc, "X", "X"))
    d = msg.delimiters
    assert (d.field, d.component, d.repetition, d.escape, d.subcomponent)[: len(enc) + 1] == (fs, *enc)
    if d.escape == NONE:  # nothing can be escaped: only content free of the declared delimiters round-trips
        declared = {fs, *enc, "\n"}
        assume(not declared & set(clean_text(family + given_name + text)))
    comp = d.component if d.component != NONE else ""
    pid5 = escape(family, d) + (comp + escape(given_name, d) if comp else "")
    msg = parse_message(build(fs, enc, pid5, escape(text, d)))
    pid = next(s for s in msg.segments if s[0] == "PID")
    obx = next(s for s in msg.segments if s[0] == "OBX")
    parts = components(field(pid, 5), d)
    assert unescape(parts[0], d) == clean_text(family)
    if comp:
        assert unescape(parts[1], d) == clean_text(given_name)
    reps = repetitions(field(obx, 5), d)
    assert len(reps) <= 1
    assert (unescape(reps[0], d) if reps else "") == clean_text(text)
    # composite datatypes (XPN) split first and decode last too
    if d.escape != NONE:
        family_out, given_out, _, _ = dt.xpn(field(pid, 5), d)
        assert (family_out or "") == clean_text(family).strip()
        if comp and clean_text(given_name).strip():
            assert given_out[0] == clean_text(given_name).strip()


@settings(max_examples=500, deadline=None, database=None)
@given(raw=raw_text, esc=st.sampled_from(["\\", "!", "?"]))
def test_decoded_values_never_hold_control_characters(raw: str, esc: str) -> None:
    d = Delimiters(escape=esc)
    value = unescape(raw.replace("\\", esc), d, "utf-8")
    assert no_control(value)
    assert "\r" not in value  # line breaks are LF only


@settings(max_examples=200, deadline=None, database=None)
@given(pid5=raw_text, obx5=raw_text)
def test_tokenizer_fields_decode_clean(pid5: str, obx5: str) -> None:
    text = build("|", "^~\\&", pid5.replace("\r", ""), obx5.replace("\r", "").replace("\x00", ""))
    try:
        msg = parse_message(text)
    except Exception as exc:  # only the documented error
        assert type(exc).__name__ == "ParseError"
        return
    d = msg.delimiters
    for seg in msg.segments:
        for raw in seg[1:]:
            for rep in repetitions(raw, d):
                for comp in rep.split(d.component):
                    for sub in comp.split(d.subcomponent):
                        assert no_control(unescape(sub, d))


ORU = (
    "MSH|^~\\&|RIS|NORTHCLINIC|EHR|NORTHCLINIC|20261130101500+0100||ORU^R01^ORU_R01|MSG1|P|2.5.1\r"
    "PID|1||{pid3}^^^NORTHCLINIC^MR||{pid5}^Anna||19700101|F\r"
    "ORC|RE|PL1|FI1\r"
    "OBR|1|PL1|FI1|71020^{obr4}^CPT4|||20261130093000+0100|||||||||REF1^Referrer^Rolf||ACC1||||"
    "20261130101000+0100||CR|F|||||||RAD1&{reader}&Rita\r"
    "OBX|1|ST|113014^DICOM Study^DCM||1.2.826.0.1.3680043.8.498.1||||||F\r"
    "OBX|2|FT|71020&GDT|1|{text}||||||F\r"
    "OBX|3|CWE|RID1^{label}^RADLEX||RID2^{value}^RADLEX|{unit}|||||F\r"
    "NTE|1||{note}\r"
)
FIELD_CHARS = [*string.ascii_letters[:8], *" .\\XZHN0AD9bcr&~\x01\x0c\x1b"]
field_text = st.text(st.sampled_from(FIELD_CHARS), max_size=30)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pid3=field_text, pid5=field_text, obr4=field_text, reader=field_text, text=field_text, label=field_text,
    value=field_text, unit=field_text, note=field_text,
)  # fmt: skip
def test_no_bundle_string_holds_a_control_character(converter: Any, **parts: str) -> None:
    data = ORU.format(**{k: v.replace("^", "") for k, v in parts.items()}).encode("utf-8")
    result = converter.convert(data)
    for out in result.outputs:
        for s in strings(json.loads(out.body)):
            assert no_control(s), repr(s)
    for rej in result.rejections:
        assert no_control(rej.reason)
