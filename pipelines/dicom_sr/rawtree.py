"""Fast path for the SR content tree: content items from the raw items of :mod:`pipelines.dicom_sr.rawparse`.

Builds the same :class:`~pipelines.dicom_sr.reader.Item` nodes as :func:`pipelines.dicom_sr.reader.walk` (the
tests check both give identical trees), decoding text strictly in the Specific Character Set that applies to
each item. Decoded codes and Referenced SOP items are memoised per character set on their raw values, and
default-repertoire values (CS, UI, ...) on their bytes: pure functions, bounded memos. Big-endian files use
the pydicom walker.
"""

from __future__ import annotations

import struct

from pipelines.dicom_sr.charset import TextDecoder, UndecodableText, ascii_value, json_decoder
from pipelines.dicom_sr.rawparse import Elements, RawDataError, _sequence, cut_json, split_content
from pipelines.dicom_sr.reader import Code, Graphic, Item, Num, Ref
from pipelines.errors import ParseError

__all__ = [
    "Elements",
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

_TEXT_VRS = {b"SH", b"LO", b"UT", b"LT", b"ST", b"PN", b"UC"}
_CHARSET = 0x00080005
_MISS = object()


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
    found = cache.get(key, _MISS)  # one lookup: safe if another thread empties the memo meanwhile
    if found is not _MISS:
        return found  # type: ignore[return-value]
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
    raw_key = (get(0x00081150), get(0x00081155), get(0x00081160), get(0x0062000B))
    key: tuple[object, ...] | None = raw_key
    cache = decode.refs
    try:
        found = cache.get(raw_key)  # one lookup: safe if another thread empties the memo meanwhile
        if found is not None:
            return found
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
