"""Read a DICOM Part 10 file (or a raw dataset) and walk its SR content tree into light typed nodes.

Only what the mapping needs is converted: pydicom parses the file once (``stop_before_pixels``), and
the walker touches the content-item attributes by tag, never iterating every element. Truncated or
corrupt input becomes a :class:`~pipelines.errors.ParseError` with a one-line reason.

Text values (SH, LO, ST, LT, UT, UC, PN) still in raw form are decoded here, strictly, in the Specific
Character Set that applies to their dataset (an item's own (0008,0005), else the enclosing one:
:mod:`pipelines.dicom_sr.charset`); bytes invalid in that set raise
:class:`~pipelines.dicom_sr.charset.UndecodableText` instead of becoming U+FFFD.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pipelines.dicom_sr.charset import Charset, UndecodableText, ascii_value, charset_from_encodings, charset_of
from pipelines.errors import ParseError

__all__ = [
    "Code",
    "Graphic",
    "Item",
    "Num",
    "Ref",
    "UndecodableContentItem",
    "dataset_charset",
    "dataset_from_json",
    "first",
    "full_text",
    "get",
    "read_dataset",
    "text",
    "walk",
]

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

_SEQ_DELIM = (b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"\xff\xfe\xe0\xdd\x00\x00\x00\x00")
_UNDEFINED = 0xFFFFFFFF
_CONTENT_SEQ = Tag(0x0040, 0xA730)


@dataclass(frozen=True, slots=True)
class Code:
    """A DICOM code sequence item: value, coding scheme designator, meaning."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True, slots=True)
class Num:
    value: float | int | None
    unit: Code | None


@dataclass(frozen=True, slots=True)
class Ref:
    sop_class: str
    sop_instance: str
    frames: tuple[int, ...] = ()
    segments: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Graphic:
    kind: str  # POINT, POLYLINE, CIRCLE, ELLIPSE, MULTIPOINT, POLYGON, ELLIPSOID
    data: tuple[float, ...]
    frame_of_reference: str | None = None


@dataclass(slots=True)
class Item:
    """One SR content item (PS3.3 C.17.3) with the values the mapping reads."""

    rel: str
    vtype: str
    name: Code | None
    text: str | None = None  # TEXT, PNAME, DATETIME, DATE, TIME, UIDREF values
    code: Code | None = None
    num: Num | None = None
    ref: Ref | None = None
    graphic: Graphic | None = None
    uid: str | None = None  # Observation UID (0040,A171)
    continuous: bool = False  # CONTAINER with Continuity Of Content CONTINUOUS
    children: list[Item] = field(default_factory=list)

    def is_(self, value: str) -> bool:
        return self.name is not None and self.name.value == value

    def find(self, value: str) -> Item | None:
        return next((c for c in self.children if c.is_(value)), None)


def read_dataset(data: bytes) -> Dataset:
    """Parse the bytes (Part 10 with preamble, a raw dataset, or DICOM JSON (PS3.18 F.2)) and reject
    truncated input."""
    if data[:64].lstrip()[:1] == b"{":
        return _read_json(data)
    preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not preamble)
    except Exception as exc:  # untrusted bytes: zlib, struct and pydicom errors alike are input faults
        raise ParseError(f"not a readable DICOM file ({type(exc).__name__})") from None
    if not ds._dict or not _complete(ds, data):
        raise ParseError("truncated DICOM file: the last data element is incomplete")
    return ds


def _read_json(data: bytes) -> Dataset:
    try:
        doc = json.loads(data)
    except ValueError:
        raise ParseError("not a readable DICOM JSON dataset (invalid JSON)") from None
    return dataset_from_json(doc)


def dataset_from_json(doc: object) -> Dataset:
    try:
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        _listify(doc)
        return Dataset.from_json(doc)
    except Exception as exc:  # untrusted bytes
        raise ParseError(f"not a readable DICOM JSON dataset ({type(exc).__name__})") from None


def _listify(node: object) -> None:
    """Tolerate a bare string where DICOM JSON wants a Value array (seen in the HL7 SR IG sample)."""
    if isinstance(node, dict):
        if "vr" in node and isinstance(node.get("Value"), str):
            node["Value"] = [node["Value"]]
        for value in node.values():
            _listify(value)
    elif isinstance(node, list):
        for value in node:
            _listify(value)


def _complete(ds: Dataset, data: bytes) -> bool:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and getattr(syntax, "is_deflated", False):
        return True  # the raw bytes are zlib data; a truncated stream fails to inflate instead
    last = ds._dict[max(ds._dict)]
    if isinstance(last, RawDataElement):
        if last.length == _UNDEFINED:
            return data.endswith(_SEQ_DELIM)
        return last.value is None or len(last.value) == last.length
    if isinstance(last, DataElement) and last.VR == "SQ" and last.is_undefined_length:
        return data.endswith(_SEQ_DELIM)
    return True


_ASCII_VRS = {"UI", "DA", "TM", "DT", "CS", "IS", "DS", "AS", "AE"}
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}
_MULTI_VALUED = {"SH", "LO", "UC", "PN"}
_CHARSET_TAG = 0x00080005
_KEYWORD_TAGS: dict[str, int] = {}


class UndecodableContentItem(ParseError):
    """A content item whose text is not valid in its Specific Character Set (same reason as the raw reader's
    :class:`pipelines.dicom_sr.rawtree.UndecodableItem`)."""


def dataset_charset(ds: Dataset, inherited: Charset | None = None) -> Charset:
    """The Specific Character Set that applies to ``ds``: its own (0008,0005), else ``inherited``, else what
    pydicom resolved for it from the enclosing datasets (PS3.3 C.12.1.1.2)."""
    own = ds._dict.get(_CHARSET_TAG)  # type: ignore[call-overload]
    value = getattr(own, "value", None)
    if value:
        return charset_of(value if isinstance(value, (bytes, str)) else [str(v) for v in value])
    if inherited is not None:
        return inherited
    return charset_from_encodings(ds._character_set)


def _raw_text(ds: Dataset, tag: int, raw: RawDataElement, charset: Charset | None) -> str | None:
    """Strictly decoded text of a raw text-VR element; None when it is not a raw text element."""
    if not isinstance(raw.value, bytes):
        return None
    vr = raw.VR or dictionary_VR(tag)
    if vr not in _TEXT_VRS:
        return None
    try:
        return dataset_charset(ds, charset).decode(raw.value, vr.encode("ascii"))
    except UndecodableText as exc:
        raise exc.at(tag) from None


def text(ds: Dataset, keyword: str, charset: Charset | None = None) -> str:
    """A string attribute's value (first value if multi-valued), stripped; '' when absent.

    ASCII-only VRs (UI, DA, TM, CS, IS, DS, ...) still in raw form are read straight from their bytes,
    which skips pydicom's per-access element conversion; raw text VRs are decoded strictly in the set
    that applies (``charset`` when the caller tracks it, see :func:`dataset_charset`); values pydicom
    already converted are used as they are. Raises UndecodableText."""
    tag = _KEYWORD_TAGS.get(keyword)
    if tag is None:
        tag = _KEYWORD_TAGS.setdefault(keyword, int(pydicom.datadict.tag_for_keyword(keyword) or 0))
    raw = ds._dict.get(tag)  # type: ignore[call-overload]
    if raw is None:
        return ""
    if isinstance(raw, RawDataElement) and raw.VR in _ASCII_VRS and isinstance(raw.value, bytes):
        first_value: bytes = raw.value.split(b"\\", 1)[0]
        return first_value.strip(b" \x00").decode("ascii", "replace").strip()
    if isinstance(raw, RawDataElement):
        decoded = _raw_text(ds, tag, raw, charset)
        if decoded is not None:
            if (raw.VR or dictionary_VR(tag)) in _MULTI_VALUED:
                decoded = decoded.split("\\", 1)[0]
            return decoded.strip().strip("\x00").strip()
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else ""
    return str(value).strip().strip("\x00")


def get(ds: Dataset, keyword: str) -> Any:
    """``ds.get(keyword)`` (the element's value, None when absent), resolving the keyword once per process
    instead of through ``Dataset.__getattr__`` on every call."""
    tag = _KEYWORD_TAGS.get(keyword)
    if tag is None:
        tag = _KEYWORD_TAGS.setdefault(keyword, int(pydicom.datadict.tag_for_keyword(keyword) or 0))
    if tag not in ds._dict:
        return None
    return ds[tag].value


def first(ds: Dataset, keyword: str) -> Dataset | None:
    seq = get(ds, keyword)
    if seq is None or isinstance(seq, (str, bytes)):
        return None
    try:
        return seq[0] if len(seq) else None
    except (TypeError, IndexError):
        return None


def full_text(ds: Dataset, keyword: str, charset: Charset | None = None) -> str:
    """A text or PN attribute's whole value (every value; PN component groups with ``^`` and ``=``), trailing
    padding removed; '' when absent.
    A raw value is decoded strictly (see :func:`text`). Raises UndecodableText."""
    tag = int(pydicom.datadict.tag_for_keyword(keyword) or 0)
    raw = ds._dict.get(tag)  # type: ignore[call-overload]
    if raw is None:
        return ""
    if isinstance(raw, RawDataElement):
        decoded = _raw_text(ds, tag, raw, charset)
        if decoded is not None:
            return decoded.rstrip(" \x00")
    return str(ds.get(keyword, "") or "")


def code_of(item: Dataset | None, charset: Charset | None = None) -> Code | None:
    if item is None:
        return None
    value = text(item, "CodeValue", charset) or text(item, "LongCodeValue", charset)
    value = value or text(item, "URNCodeValue", charset)
    if not value:
        return None
    return Code(value, text(item, "CodingSchemeDesignator", charset), text(item, "CodeMeaning", charset))


def walk(ds: Dataset, depth: int = 0, charset: Charset | None = None, path: str = "1") -> list[Item]:
    """The content items below ``ds`` (its Content Sequence), recursively; ``charset`` is the Specific
    Character Set in force for ``ds`` (default: its own / pydicom's). Raises UndecodableContentItem naming
    the content item (``path`` numbering of PS3.3 C.17.3.2.5, the root is 1)."""
    seq = ds.get(_CONTENT_SEQ)
    if seq is None or depth > 64:
        return []
    charset = dataset_charset(ds, charset)
    out = []
    for n, child in enumerate(seq.value or [], 1):
        item = _item(child, depth, dataset_charset(child, charset), f"{path}.{n}")
        if item is not None:
            out.append(item)
    return out


def _item(ds: Dataset, depth: int, charset: Charset, path: str) -> Item | None:
    vtype = text(ds, "ValueType")
    if not vtype:
        return None  # by-reference relationship (Referenced Content Item Identifier) or a trial item
    try:
        item = _values(ds, vtype, charset)
    except UndecodableText as exc:
        raise UndecodableContentItem(f"SR content item {path} ({vtype}): {exc}") from None
    item.children = walk(ds, depth + 1, charset, path)
    return item


def _values(ds: Dataset, vtype: str, charset: Charset) -> Item:
    name = code_of(first(ds, "ConceptNameCodeSequence"), charset)
    item = Item(rel=text(ds, "RelationshipType"), vtype=vtype, name=name)
    if vtype == "TEXT":
        item.text = full_text(ds, "TextValue", charset)
    elif vtype == "CODE":
        item.code = code_of(first(ds, "ConceptCodeSequence"), charset)
    elif vtype == "NUM":
        item.num = _num(ds, charset)
    elif vtype == "PNAME":
        item.text = full_text(ds, "PersonName", charset)
    elif vtype == "UIDREF":
        item.text = text(ds, "UID")
    elif vtype == "DATETIME":
        item.text = _when(ds, 0x0040A120)
    elif vtype == "DATE":
        item.text = _when(ds, 0x0040A121)
    elif vtype == "TIME":
        item.text = _when(ds, 0x0040A122)
    elif vtype in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        item.ref = _ref(first(ds, "ReferencedSOPSequence"))
    elif vtype in ("SCOORD", "SCOORD3D"):
        item.graphic = _graphic(ds)
    elif vtype == "CONTAINER":
        item.continuous = text(ds, "ContinuityOfContent").upper() == "CONTINUOUS"
    item.uid = text(ds, "ObservationUID") or None
    return item


def _when(ds: Dataset, tag: int) -> str:
    """A DA/TM/DT content item value, default repertoire only (see rawtree._when)."""
    raw = ds._dict.get(tag)  # type: ignore[call-overload]
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        return ascii_value(raw.value, tag)
    return text(ds, str(pydicom.datadict.keyword_for_tag(tag)))


def _number(raw: object) -> float | int | None:
    if raw is None or raw == "":
        return None
    s = str(raw).strip()
    try:
        if s.lstrip("+-").isdigit():
            return int(s)
        return float(s)
    except ValueError:
        return None


def _num(ds: Dataset, charset: Charset) -> Num:
    mv = first(ds, "MeasuredValueSequence")
    if mv is None:
        return Num(None, None)
    value = _number(mv.get("FloatingPointValue")) if "FloatingPointValue" in mv else None
    if value is None:
        value = _number(mv.get("NumericValue"))
    return Num(value, code_of(first(mv, "MeasurementUnitsCodeSequence"), dataset_charset(mv, charset)))


def _ints(value: object) -> tuple[int, ...]:
    if value is None or value == "":
        return ()
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    out = []
    for v in values:
        n = _number(v)
        if isinstance(n, int):
            out.append(n)
    return tuple(out)


def _ref(ds: Dataset | None) -> Ref | None:
    if ds is None:
        return None
    inst = text(ds, "ReferencedSOPInstanceUID")
    if not inst:
        return None
    return Ref(
        sop_class=text(ds, "ReferencedSOPClassUID"),
        sop_instance=inst,
        frames=_ints(ds.get("ReferencedFrameNumber")),
        segments=_ints(ds.get("ReferencedSegmentNumber")),
    )


def _graphic(ds: Dataset) -> Graphic | None:
    kind = text(ds, "GraphicType")
    raw = ds.get("GraphicData")
    if not kind or raw is None:
        return None
    values = raw if isinstance(raw, (list, tuple, pydicom.multival.MultiValue)) else [raw]
    data = tuple(float(v) for v in values)
    return Graphic(kind, data, text(ds, "ReferencedFrameOfReferenceUID") or None)
