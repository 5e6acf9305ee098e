"""Fast path for the SR content tree: parse the raw bytes of the Content Sequence directly.

pydicom keeps a top-level sequence as raw bytes until it is accessed, and then builds a Dataset per
item and converts every element on access; for a dose report with two thousand content items that is
most of the conversion time. This module walks the same bytes once (Explicit or Implicit VR Little
Endian), keeps only the content-item attributes the mapping reads, and builds the same
:class:`~pipelines.dicom_sr.reader.Item` nodes as :func:`pipelines.dicom_sr.reader.walk` (the tests
check both give identical trees). Other encodings (deflated streams already expanded by pydicom,
big endian) use the pydicom walker.
"""

from __future__ import annotations

import struct

from pipelines.dicom_sr.charset import TextDecoder, UndecodableText, ascii_value, json_decoder
from pipelines.dicom_sr.reader import Code, Graphic, Item, Num, Ref
from pipelines.errors import ParseError

__all__ = [
    "RawDataError",
    "TextDecoder",
    "UndecodableItem",
    "cut_json",
    "evidence",
    "items_to_tree",
    "json_decoder",
    "split_content",
    "study_uids",
    "walk_raw",
]

_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_TEXT_VRS = {b"SH", b"LO", b"UT", b"LT", b"ST", b"PN", b"UC"}

# The content-item attributes read by the mapping, with their VRs (needed for Implicit VR).
_VR = {
    0x00080005: "CS",  # an item's own Specific Character Set (PS3.3 C.12.1.1.2)
    0x00080100: "SH", 0x00080102: "SH", 0x00080104: "LO", 0x00080119: "UC", 0x00080120: "UR",
    0x00081150: "UI", 0x00081155: "UI", 0x00081160: "IS", 0x00081199: "SQ", 0x0062000B: "US",
    0x00700022: "FL", 0x00700023: "CS", 0x30060024: "UI",
    0x0040A010: "CS", 0x0040A040: "CS", 0x0040A043: "SQ", 0x0040A050: "CS", 0x0040A120: "DT",
    0x0040A121: "DA", 0x0040A122: "TM", 0x0040A123: "PN", 0x0040A124: "UI", 0x0040A160: "UT",
    0x0040A161: "FD", 0x0040A168: "SQ", 0x0040A171: "UI", 0x0040A300: "SQ", 0x0040A30A: "DS",
    0x004008EA: "SQ", 0x0040A730: "SQ",
    0x0020000D: "UI", 0x0020000E: "UI", 0x00081115: "SQ",  # evidence: study, series, Referenced Series Seq
}  # fmt: skip

_VR_BYTES = {tag: vr.encode("ascii") for tag, vr in _VR.items()}
Elements = dict[int, object]  # tag -> (vr, bytes) for values, list[Elements] for sequences


class RawDataError(ValueError):
    """The raw bytes are not a well-formed sequence."""


class UndecodableItem(ParseError):
    """A content item whose text is not valid in its Specific Character Set: the reason names the item by
    its position (PS3.3 C.17.3.2.5 numbering: the root is 1, its first child 1.1), its value type and
    the attribute; never the text."""


def walk_raw(value: bytes, implicit: bool, decode: TextDecoder) -> list[Item]:
    items, _ = _sequence(value, 0, len(value), implicit, False)
    return items_to_tree(items, decode)


def items_to_tree(items: list[Elements], decode: TextDecoder) -> list[Item]:
    """The Content Sequence items of the document root (content item 1), decoded with ``decode``.
    Raises UndecodableItem naming the item."""
    out = []
    for n, el in enumerate(items, 1):
        try:
            item = _item(el, decode, 0)
        except _ItemFault as fault:
            path = "".join(f".{i}" for i in reversed(fault.path))
            raise UndecodableItem(f"SR content item 1.{n}{path} ({fault.vtype}): {fault.error}") from None
        if item is not None:
            out.append(item)
    return out


class _ItemFault(Exception):
    """Undecodable text in a content item, on its way up to items_to_tree, which names the item: its
    position is collected on the way (child numbers, innermost first) rather than formatted for every item."""

    def __init__(self, vtype: str, error: UndecodableText) -> None:
        super().__init__(vtype)
        self.vtype, self.error, self.path = vtype, error, list[int]()


_CHARSET = 0x00080005
_SYNTAXES = {b"1.2.840.10008.1.2": True, b"1.2.840.10008.1.2.1": False}  # UID -> implicit VR
_CONTENT = 0x0040A730
#: Top-level sequences parsed here instead of by pydicom: the evidence lists and the content tree.
_CUT = {0x0040A375, 0x0040A385, _CONTENT}


def evidence(items: list[Elements], decode: TextDecoder) -> dict[str, tuple[str, str | None]]:
    """SOP Instance UID -> (Study UID, Series UID) from a Hierarchical SOP Instance Reference sequence."""
    out: dict[str, tuple[str, str | None]] = {}
    for study in items:
        study_uid = _first_text(study, 0x0020000D, decode)
        for series in _seq(study, 0x00081115):
            series_uid = _first_text(series, 0x0020000E, decode) or None
            for inst in _seq(series, 0x00081199):
                out.setdefault(_first_text(inst, 0x00081155, decode), (study_uid, series_uid))
    return out


def study_uids(items: list[Elements], decode: TextDecoder) -> list[str]:
    return [uid for uid in (_first_text(study, 0x0020000D, decode) for study in items) if uid]


_PACK = {b"FD": "<d", b"FL": "<f", b"US": "<H", b"SS": "<h", b"UL": "<I", b"SL": "<i"}


def cut_json(doc: dict[str, object]) -> dict[int, list[Elements]]:
    """DICOM JSON (PS3.18 F.2): remove the content and evidence sequences from ``doc`` (so pydicom's
    ``from_json`` converts only the header) and return them as parsed items, text values UTF-8."""
    cut: dict[int, list[Elements]] = {}
    for tag in _CUT:
        key = f"{tag:08X}"
        node = doc.pop(key, None)
        if isinstance(node, dict):
            cut[tag] = _json_items(node.get("Value"))
    return cut


def _json_items(value: object) -> list[Elements]:
    if not isinstance(value, list):
        return []
    return [_json_dataset(item) for item in value if isinstance(item, dict)]


def _json_dataset(node: dict[str, object]) -> Elements:
    out: Elements = {}
    for key, attr in node.items():
        try:
            tag = int(key, 16)
        except ValueError:
            continue
        if tag not in _VR_BYTES or tag == _CHARSET or not isinstance(attr, dict):
            continue  # JSON text is Unicode already: an item's Specific Character Set does not apply
        vr = str(attr.get("vr", _VR[tag])).encode("ascii", "replace")
        values = attr.get("Value")
        if isinstance(values, str):
            values = [values]
        if vr == b"SQ":
            out[tag] = _json_items(values)
            continue
        if not isinstance(values, list):
            out[tag] = (vr, b"")
        elif vr in _PACK:
            out[tag] = (vr, b"".join(struct.pack(_PACK[vr], v) for v in values if isinstance(v, (int, float))))
        else:
            parts = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values]
            out[tag] = (vr, "\\".join(str(p) for p in parts).encode("utf-8"))
    return out


def split_content(data: bytes) -> tuple[bytes, dict[int, list[Elements]]] | None:
    """Cut the top-level Content Sequence and evidence sequences out of a Part 10 Little Endian file:
    (the file without them, tag -> parsed items). pydicom then reads only the small header, while these
    large trees are parsed once here. None when the file is not Part 10 Explicit/Implicit VR Little
    Endian (the caller then lets pydicom read everything)."""
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    buf = data
    pos, syntax = 132, b""
    while pos + 8 <= len(data) and struct.unpack_from("<H", buf, pos)[0] == 0x0002:
        tag = _tag(buf, pos)
        raw_vr = bytes(buf[pos + 4 : pos + 6])
        if raw_vr in _LONG_VRS:
            length, head = struct.unpack_from("<I", buf, pos + 8)[0], 12
        else:
            length, head = struct.unpack_from("<H", buf, pos + 6)[0], 8
        if tag == 0x00020010:
            syntax = bytes(buf[pos + head : pos + head + length]).rstrip(b"\x00 ")
        pos += head + length
    implicit = _SYNTAXES.get(syntax)
    if implicit is None:
        return None
    end = len(data)
    cut: dict[int, list[Elements]] = {}
    kept: list[bytes] = []
    keep_from = 0
    while pos + 8 <= end:
        start, tag = pos, _tag(buf, pos)
        if tag > _CONTENT:
            break
        if implicit:
            length = struct.unpack_from("<I", buf, pos + 4)[0]
            is_sq = length == _UNDEFINED or tag in _CUT
            pos += 8
        else:
            raw_vr = bytes(buf[pos + 4 : pos + 6])
            if raw_vr in _LONG_VRS:
                length = struct.unpack_from("<I", buf, pos + 8)[0]
                pos += 12
            else:
                length = struct.unpack_from("<H", buf, pos + 6)[0]
                pos += 8
            is_sq = raw_vr == b"SQ" or length == _UNDEFINED
        if tag in _CUT and is_sq:
            if length == _UNDEFINED:
                items, pos = _sequence(buf, pos, end, implicit, True)
            else:
                if pos + length > end:
                    raise RawDataError("sequence runs past the end of the file")
                items, _ = _sequence(buf, pos, pos + length, implicit, False)
                pos += length
            cut[tag] = items
            kept.append(data[keep_from:start])
            keep_from = pos
            continue
        if length == _UNDEFINED:
            if not is_sq:
                return None
            _, pos = _sequence(buf, pos, end, implicit, True)
        else:
            pos += length
    kept.append(data[keep_from:])
    return b"".join(kept), cut


_HHI = struct.Struct("<HHI").unpack_from  # group, element, 32-bit length (implicit VR, item headers)
_HH2SH = struct.Struct("<HH2sH").unpack_from  # group, element, VR, 16-bit length (explicit VR)
_U32 = struct.Struct("<I").unpack_from


def _sequence(buf: bytes, pos: int, end: int, implicit: bool, undefined: bool) -> tuple[list[Elements], int]:
    items: list[Elements] = []
    while pos + 8 <= end:
        group, elem, length = _HHI(buf, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == _SEQ_END:
            return items, pos
        if tag != _ITEM:
            raise RawDataError(f"expected a sequence item, found tag {tag:08X}")
        if length == _UNDEFINED:
            elements, pos = _dataset(buf, pos, end, True, True) if implicit else _explicit_dataset(buf, pos, end, True)
        else:
            if pos + length > end:
                raise RawDataError("sequence item runs past its sequence")
            if implicit:
                elements = _dataset(buf, pos, pos + length, True, False)[0]
            else:
                elements = _explicit_dataset(buf, pos, pos + length, False)[0]
            pos += length
        items.append(elements)
    if undefined:
        raise RawDataError("sequence without its delimitation item")
    return items, pos


def _tag(buf: bytes, pos: int) -> int:
    group, elem = struct.unpack_from("<HH", buf, pos)
    return int((group << 16) | elem)


def _dataset(buf: bytes, pos: int, end: int, implicit: bool, undefined: bool) -> tuple[Elements, int]:
    if not implicit:
        return _explicit_dataset(buf, pos, end, undefined)
    out: Elements = {}
    vrs = _VR_BYTES
    while pos + 8 <= end:
        group, elem, length = _HHI(buf, pos)
        tag = (group << 16) | elem
        if tag == _ITEM_END:
            return out, pos + 8
        vr = vrs.get(tag)
        pos += 8
        if vr is None:  # not read by the mapping: skipped (an undefined length is a sequence to walk)
            if length == _UNDEFINED:
                pos = _sequence(buf, pos, end, True, True)[1]
                continue
            if pos + length > end:
                raise RawDataError(f"element {tag:08X} runs past its item")
            pos += length
            continue
        if vr == b"SQ":
            if length == _UNDEFINED:
                out[tag], pos = _undefined_sequence(buf, pos, end, True)
            else:
                if pos + length > end:
                    raise RawDataError("sequence runs past its item")
                out[tag] = _sequence(buf, pos, pos + length, True, False)[0]
                pos += length
            continue
        if length == _UNDEFINED or pos + length > end:
            raise RawDataError(f"element {tag:08X} runs past its item")
        out[tag] = (vr, buf[pos : pos + length])
        pos += length
    if undefined:
        raise RawDataError("item without its delimitation item")
    return out, pos


_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
#: Small undefined-length sequences by (VR encoding, their bytes up to and including the first Sequence
#: Delimitation Item) -> (items, length consumed).
_SMALL_UNDEFINED: dict[tuple[bool, bytes], tuple[list[Elements], int]] = {}


def _undefined_sequence(buf: bytes, pos: int, end: int, implicit: bool) -> tuple[list[Elements], int]:
    """An undefined-length sequence (code, value and reference items, written so by DCMTK and others). A small
    one is parsed once per distinct bytes: the key runs to the first delimiter found, and an entry is stored
    only when the parse consumed exactly those bytes, so a hit is the parse of identical bytes (pure)."""
    stop = buf.find(_SEQ_DELIMITER, pos, min(end, pos + 512)) + 8
    if stop < 8:
        return _sequence(buf, pos, end, implicit, True)
    key = (implicit, buf[pos:stop])
    known = _SMALL_UNDEFINED.get(key)
    if known is not None:
        return known[0], pos + known[1]
    items, after = _sequence(buf, pos, end, implicit, True)
    if after == stop:
        if len(_SMALL_UNDEFINED) >= 4096:
            _SMALL_UNDEFINED.clear()
        _SMALL_UNDEFINED[key] = (items, after - pos)
    return items, after


#: Small defined-length Explicit VR sequences by their bytes -> their items (a pure function of the bytes; the
#: items are only read, never changed; emptied at 4096 entries).
_SMALL: dict[bytes, list[Elements]] = {}


def _explicit_dataset(buf: bytes, pos: int, end: int, undefined: bool) -> tuple[Elements, int]:
    """One item of an Explicit VR Little Endian sequence (the hot loop of the fast path: one unpack per
    element, values kept as bytes slices, unread elements skipped by their length)."""
    out: Elements = {}
    vrs = _VR_BYTES
    long_vrs = _LONG_VRS
    unpack = _HH2SH
    while pos + 8 <= end:
        group, elem, vr, length = unpack(buf, pos)
        tag = (group << 16) | elem
        if tag == _ITEM_END:
            return out, pos + 8
        if vr in long_vrs:
            length = _U32(buf, pos + 8)[0]
            pos += 12
            if vr == b"SQ" or (length == _UNDEFINED and vr == b"UN"):
                if length == _UNDEFINED:
                    items, pos = (
                        _undefined_sequence(buf, pos, end, False)
                        if tag in vrs
                        else _sequence(buf, pos, end, False, True)
                    )
                    if tag in vrs:
                        out[tag] = items
                    continue
                if pos + length > end:
                    raise RawDataError("sequence runs past its item")
                if tag in vrs:
                    if length <= 256:  # code, measured value and reference items: the same bytes recur
                        value = buf[pos : pos + length]
                        known = _SMALL.get(value)
                        if known is None:
                            known = _sequence(buf, pos, pos + length, False, False)[0]
                            if len(_SMALL) >= 4096:
                                _SMALL.clear()
                            _SMALL[value] = known
                        out[tag] = known
                    else:
                        out[tag] = _sequence(buf, pos, pos + length, False, False)[0]
                pos += length
                continue
            if length == _UNDEFINED:
                raise RawDataError(f"element {tag:08X} runs past its item")
        else:
            pos += 8
        if pos + length > end:
            raise RawDataError(f"element {tag:08X} runs past its item")
        if tag in vrs:
            out[tag] = (vr, buf[pos : pos + length])
        pos += length
    if undefined:
        raise RawDataError("item without its delimitation item")
    return out, pos


def _str(el: Elements, tag: int, decode: TextDecoder) -> str:
    value = el.get(tag)
    if not isinstance(value, tuple):
        return ""
    vr, raw = value
    if vr not in _TEXT_VRS:
        return str(raw.decode("ascii", "replace")).rstrip(" \x00")
    try:
        return decode(raw, vr).rstrip(" \x00")
    except UndecodableText as exc:
        raise exc.at(tag) from None


def _first_text(el: Elements, tag: int, decode: TextDecoder) -> str:
    value = el.get(tag)
    if value.__class__ is not tuple:
        return ""
    vr, raw = value
    if vr in _TEXT_VRS:
        try:
            return decode(raw, vr).rstrip(" \x00").split("\\")[0].strip()
        except UndecodableText as exc:
            raise exc.at(tag) from None
    return _ascii_first(raw)


def _ascii_first(raw: bytes) -> str:
    """First value of a default-repertoire VR (CS, UI, IS, DS, ...), stripped: the same enumerated values and
    UIDs recur across a file's items, so results are memoised on the bytes (a pure function; the memo is
    emptied when it reaches 4096 entries)."""
    known = _ASCII.get(raw)
    if known is not None:
        return known
    first: bytes = raw.split(b"\\", 1)[0]
    text = first.strip(b" \x00").decode("ascii", "replace").strip()
    if len(_ASCII) >= 4096:
        _ASCII.clear()
    _ASCII[raw] = text
    return text


_ASCII: dict[bytes, str] = {}


def _when(el: Elements, tag: int) -> str:
    """A DA, TM or DT value (first value): default repertoire only (PS3.5 §6.2), whatever the Specific
    Character Set; other bytes raise UndecodableText instead of reaching the narrative as U+FFFD."""
    value = el.get(tag)
    if not isinstance(value, tuple):
        return ""
    return ascii_value(value[1], tag)


def _seq(el: Elements, tag: int) -> list[Elements]:
    value = el.get(tag)
    return value if isinstance(value, list) else []


def _code(el: Elements | None, decode: TextDecoder) -> Code | None:
    """A code item; the same code recurs hundreds of times in a dose report and across files, so decoded
    codes are memoised per character set on their raw bytes (bounded: emptied at 4096 entries)."""
    if el is None:
        return None
    if _CHARSET in el:  # a code sequence item with its own Specific Character Set
        decode = decode.child(el[_CHARSET])
    cache = decode.codes
    get = el.get
    key = (get(0x00080100), get(0x00080102), get(0x00080104), get(0x00080119), get(0x00080120))
    if key in cache:
        return cache[key]
    code = _decode_code(el, decode)
    if len(cache) >= 4096:
        cache.clear()
    cache[key] = code
    return code


def _decode_code(el: Elements, decode: TextDecoder) -> Code | None:
    value = _first_text(el, 0x00080100, decode) or _first_text(el, 0x00080119, decode)
    value = value or _first_text(el, 0x00080120, decode)
    if not value:
        return None
    return Code(value, _first_text(el, 0x00080102, decode), _first_text(el, 0x00080104, decode))


def _one(seq: list[Elements]) -> Elements | None:
    return seq[0] if seq else None


def _item(el: Elements, decode: TextDecoder, depth: int) -> Item | None:
    if _CHARSET in el:  # the item's own set applies to it and to the items nested in it
        decode = decode.child(el[_CHARSET])
    value = el.get(0x0040A040)
    if value.__class__ is tuple and value[0] == b"CS":
        vtype = _ASCII.get(value[1]) or _ascii_first(value[1])
    else:
        vtype = _first_text(el, 0x0040A040, decode)
    if not vtype:
        return None
    try:
        item = _values(el, vtype, decode)
    except UndecodableText as exc:
        raise _ItemFault(vtype, exc) from None
    if depth < 64:
        children = el.get(0x0040A730)
        if children.__class__ is list and children:
            out = item.children
            for n, x in enumerate(children, 1):
                try:
                    child = _item(x, decode, depth + 1)
                except _ItemFault as fault:
                    fault.path.append(n)
                    raise
                if child is not None:
                    out.append(child)
    return item


def _values(el: Elements, vtype: str, decode: TextDecoder) -> Item:
    get = el.get
    rel = get(0x0040A010)
    if rel is None:
        rel = ""
    elif rel.__class__ is tuple and rel[0] == b"CS":
        rel = _ASCII.get(rel[1]) or _ascii_first(rel[1])
    else:
        rel = _first_text(el, 0x0040A010, decode)
    seq = get(0x0040A043)
    item = Item(
        rel,
        vtype,
        _code(seq[0], decode) if seq.__class__ is list and seq else None,
    )
    if vtype == "TEXT":
        item.text = _str(el, 0x0040A160, decode)
    elif vtype == "CODE":
        item.code = _code(_one(_seq(el, 0x0040A168)), decode)
    elif vtype == "NUM":
        item.num = _num(_one(_seq(el, 0x0040A300)), decode)
    elif vtype == "PNAME":
        item.text = _str(el, 0x0040A123, decode)
    elif vtype == "UIDREF":
        item.text = _first_text(el, 0x0040A124, decode)
    elif vtype == "DATETIME":
        item.text = _when(el, 0x0040A120)
    elif vtype == "DATE":
        item.text = _when(el, 0x0040A121)
    elif vtype == "TIME":
        item.text = _when(el, 0x0040A122)
    elif vtype in ("IMAGE", "COMPOSITE", "WAVEFORM"):
        item.ref = _ref(_one(_seq(el, 0x00081199)), decode)
    elif vtype in ("SCOORD", "SCOORD3D"):
        item.graphic = _graphic(el, decode)
    elif vtype == "CONTAINER":
        item.continuous = _first_text(el, 0x0040A050, decode).upper() == "CONTINUOUS"
    if 0x0040A171 in el:
        item.uid = _first_text(el, 0x0040A171, decode) or None
    return item


def _number(s: str) -> float | int | None:
    s = s.strip()
    if not s:
        return None
    try:
        return int(s) if s.lstrip("+-").isdigit() else float(s)
    except ValueError:
        return None


def _num(mv: Elements | None, decode: TextDecoder) -> Num:
    if mv is None:
        return Num(None, None)
    if _CHARSET in mv:
        decode = decode.child(mv[_CHARSET])
    value: float | int | None = None
    fp = mv.get(0x0040A161)
    if isinstance(fp, tuple) and len(fp[1]) >= 8:
        value = float(struct.unpack_from("<d", fp[1])[0])
    if value is None:
        value = _number(_first_text(mv, 0x0040A30A, decode))
    return Num(value, _code(_one(_seq(mv, 0x004008EA)), decode))


def _ints(el: Elements, tag: int, decode: TextDecoder) -> tuple[int, ...]:
    value = el.get(tag)
    if not isinstance(value, tuple):
        return ()
    vr, raw = value
    if vr == b"US":
        return tuple(int(v) for v in struct.unpack_from(f"<{len(raw) // 2}H", raw))
    out = []
    for part in _str(el, tag, decode).split("\\"):
        n = _number(part)
        if isinstance(n, int):
            out.append(n)
    return tuple(out)


def _ref(el: Elements | None, decode: TextDecoder) -> Ref | None:
    """A Referenced SOP Sequence item; many items reference the same instance (every measurement of an
    image), so references are memoised per character set on their raw values, like codes."""
    if el is None:
        return None
    get = el.get
    key: tuple[object, ...] | None = (get(0x00081150), get(0x00081155), get(0x00081160), get(0x0062000B))
    cache = decode.refs
    try:
        if key in cache:
            return cache[key]
    except TypeError:  # a value that is a sequence (malformed Explicit VR): read, not memoised
        key = None
    inst = _first_text(el, 0x00081155, decode)
    if not inst:
        return None
    ref = Ref(
        sop_class=_first_text(el, 0x00081150, decode),
        sop_instance=inst,
        frames=_ints(el, 0x00081160, decode),
        segments=_ints(el, 0x0062000B, decode),
    )
    if key is not None:
        if len(cache) >= 4096:
            cache.clear()
        cache[key] = ref
    return ref


def _graphic(el: Elements, decode: TextDecoder) -> Graphic | None:
    kind = _first_text(el, 0x00700023, decode)
    raw = el.get(0x00700022)
    if not kind or not isinstance(raw, tuple):
        return None
    data = raw[1]
    values = struct.unpack_from(f"<{len(data) // 4}f", data)
    return Graphic(kind, tuple(float(v) for v in values), _first_text(el, 0x30060024, decode) or None)
