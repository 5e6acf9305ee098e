"""Raw SR sequences: the bytes of the Content Sequence and the evidence sequences, parsed once into plain items.

pydicom keeps a top-level sequence as raw bytes until it is accessed, and then builds a Dataset per item and
converts every element on access; for a dose report with two thousand content items that is most of the
conversion time. This module walks the same bytes once (Explicit or Implicit VR Little Endian) and keeps only
the content-item attributes the mapping reads, as ``tag -> (VR, value bytes)`` and ``tag -> [items]`` for
sequences (:data:`Elements`); :mod:`pipelines.dicom_sr.rawtree` turns them into content items. DICOM JSON
(PS3.18 F.2) content is cut into the same shape (:func:`cut_json`).

Small sequences (code, measured value and reference items) recur byte for byte across items and files; they
are parsed once per distinct bytes (bounded memos of a pure function: the items are only read, never changed).
"""

from __future__ import annotations

import struct

__all__ = ["Elements", "RawDataError", "cut_json", "split_content"]

_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}

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


_CHARSET = 0x00080005  # Specific Character Set
_SYNTAXES = {b"1.2.840.10008.1.2": True, b"1.2.840.10008.1.2.1": False}  # UID -> implicit VR
_CONTENT = 0x0040A730
#: Top-level sequences parsed here instead of by pydicom: the evidence lists and the content tree.
_CUT = {0x0040A375, 0x0040A385, _CONTENT}


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
            is_sq = raw_vr == b"SQ" or length == _UNDEFINED or (raw_vr == b"UN" and tag in _CUT)
        if tag in _CUT and is_sq:
            items_implicit = implicit or raw_vr == b"UN"  # UN holds Implicit VR items (PS3.5 6.2.2)
            if length == _UNDEFINED:
                items, pos = _sequence(buf, pos, end, items_implicit, True)
            else:
                if pos + length > end:
                    raise RawDataError("sequence runs past the end of the file")
                items, _ = _sequence(buf, pos, pos + length, items_implicit, False)
                pos += length
            cut[tag] = items
            kept.append(data[keep_from:start])
            keep_from = pos
            continue
        if length == _UNDEFINED:
            if not is_sq:
                return None
            _, pos = _sequence(buf, pos, end, implicit or raw_vr == b"UN", True)
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
            if vr == b"UN" and length != _UNDEFINED and tag in vrs:
                vr = vrs[tag]  # a UN value of an attribute read here: its dictionary VR, as pydicom reads it
                if vr == b"SQ":  # a sequence's UN bytes are Implicit VR Little Endian items (PS3.5 6.2.2)
                    if pos + length > end:
                        raise RawDataError("sequence runs past its item")
                    out[tag] = _sequence(buf, pos, pos + length, True, False)[0]
                    pos += length
                    continue
            if vr == b"SQ" or (length == _UNDEFINED and vr == b"UN"):
                if length == _UNDEFINED:
                    un = vr == b"UN"  # its items are Implicit VR Little Endian (PS3.5 6.2.2)
                    items, pos = (
                        _undefined_sequence(buf, pos, end, un)
                        if tag in vrs
                        else _sequence(buf, pos, end, un, True)
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
