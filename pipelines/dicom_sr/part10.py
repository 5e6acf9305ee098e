"""One pass over a well-formed Part 10 file (PS3.10 §7): the dataset pydicom would read, without pydicom's reader.

``pydicom.dcmread`` costs about 0.3 ms per file before a single value is converted (file-like reads, meta
validation, a generator per dataset); for the small header of an SR that is as much as mapping it. This module
walks the file's bytes once: the File Meta Information (Explicit VR Little Endian), then the top-level data
elements of an Explicit or Implicit VR Little Endian dataset (a deflated one inflated first, as pydicom does).
The Content Sequence and the evidence sequences are parsed into raw items for :mod:`pipelines.dicom_sr.rawtree`
(as :func:`~pipelines.dicom_sr.rawparse.split_content` does); every other element becomes the
``RawDataElement`` pydicom's reader would have produced (same tag, VR, length, value and encoding flags; an
undefined-length sequence parsed by pydicom's ``read_sequence`` as ``dcmread`` does), so header values are
converted by pydicom exactly as before.

It reads only files it can read exactly as pydicom would. Anything unusual (no preamble, another transfer
syntax, a deflated stream that does not inflate or holds a faulty tree, a group 0000 command set, pixel data,
an unknown or implicit-looking VR, elements out of order, an undefined-length value that is not a sequence, a
length past the end, trailing bytes) returns ``None`` and the caller uses ``dcmread``, so rejections and their
reasons do not change.
"""

from __future__ import annotations

import io
import struct
import zlib

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import VR

from pipelines.dicom_sr.rawparse import _CUT, _LONG_VRS, _SYNTAXES, Elements, RawDataError, _sequence

__all__ = ["read_part10"]

_UNDEFINED = 0xFFFFFFFF
_DEFLATED = b"1.2.840.10008.1.2.1.99"
_CHARSET = 0x00080005
_PIXELS = 0x7FE00000  # (7FE0,xxxx): where dcmread(stop_before_pixels=True) may stop; not read here
_VALID_VRS = {vr.value.encode("ascii") for vr in VR}
_HH2SH = struct.Struct("<HH2sH").unpack_from
_HHI = struct.Struct("<HHI").unpack_from
_U32 = struct.Struct("<I").unpack_from


class _Unusual(Exception):
    """Not a file this reader reproduces exactly: the caller falls back to dcmread."""


def read_part10(data: bytes) -> tuple[FileDataset, dict[int, list[Elements]]] | None:
    """(the dataset without the Content and evidence sequences, tag -> their parsed items), or None when the
    file is not a plain Part 10 Little Endian file (use ``split_content`` and ``dcmread``).

    Deflated Explicit VR Little Endian (PS3.5 A.5) is inflated as pydicom does and then read the same way.
    Raises RawDataError or struct.error for a malformed Content or evidence sequence (as split_content)."""
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    try:
        meta, pos = _meta(data)
        syntax = meta.get(BaseTag(0x00020010))
        if syntax is None or syntax.value is None:
            return None
        uid = bytes(syntax.value).rstrip(b"\x00 ")
        implicit = _SYNTAXES.get(uid)
        if uid == _DEFLATED:
            implicit = False
            if data[pos : pos + 2] == b"\x00\x00":  # dcmread would look for a command set first
                return None
            try:
                inflated = zlib.decompress(data[pos:], -zlib.MAX_WBITS)
            except zlib.error:
                return None
            try:  # a fault in the inflated content tree: dcmread and its reader give the reason, as before
                elements, cut = _top_level(inflated, 0, False, first_tag=-1)
            except (RawDataError, struct.error):
                return None
        elif implicit is None:
            return None
        else:
            elements, cut = _top_level(data, pos, implicit)
    except _Unusual:
        return None
    if not elements:
        return None
    file_meta = FileMetaDataset(meta)
    file_meta.set_original_encoding(is_implicit_vr=False, is_little_endian=True, character_encoding=default_encoding)
    ds = FileDataset(None, elements, data[:128], file_meta, implicit, True)  # type: ignore[arg-type]
    ds.set_original_encoding(implicit, True, ds._character_set)
    return ds, cut


def _meta(data: bytes) -> tuple[dict[BaseTag, RawDataElement | DataElement], int]:
    """Group 0002, always Explicit VR Little Endian (PS3.10 §7.1)."""
    meta: dict[BaseTag, RawDataElement | DataElement] = {}
    pos, end, last = 132, len(data), -1
    while pos + 8 <= end:
        group, elem, vr, length = _HH2SH(data, pos)
        if group != 0x0002:
            break
        tag = (group << 16) | elem
        pos = _element(data, pos, tag, vr, length, False, last, meta)
        last = tag
    return meta, pos


def _top_level(
    data: bytes, pos: int, implicit: bool, *, first_tag: int = 0x0002FFFF
) -> tuple[dict[BaseTag, RawDataElement | DataElement], dict[int, list[Elements]]]:
    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    parsed: dict[int, list[Elements]] = {}
    end, last, first = len(data), first_tag, True
    while pos < end:
        if pos + 8 > end:
            raise _Unusual("trailing bytes")
        if implicit:
            group, elem, length = _HHI(data, pos)
            vr = b""
            if first and 0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B:
                raise _Unusual("implicit VR syntax, explicit-looking first element")
        else:
            group, elem, vr, length = _HH2SH(data, pos)
        first = False
        tag = (group << 16) | elem
        if tag >= _PIXELS or group == 0:
            raise _Unusual("pixel data or command set")
        if tag in _CUT:
            pos = _cut(data, pos, tag, vr, length, implicit, last, parsed)
            last = tag
            continue
        pos = _element(data, pos, tag, vr, length, implicit, last, elements)
        last = tag
    return elements, parsed


def _cut(
    data: bytes, pos: int, tag: int, vr: bytes, length: int, implicit: bool, last: int, cut: dict[int, list[Elements]]
) -> int:
    """A Content or evidence sequence, parsed into raw items (the rules of rawparse.split_content)."""
    if tag <= last:
        raise _Unusual("elements out of order")
    if not implicit:
        if vr in _LONG_VRS:
            length = _U32(data, pos + 8)[0]
            pos += 12
        else:
            pos += 8
        if vr not in (b"SQ", b"UN") and length != _UNDEFINED:
            raise _Unusual("content sequence with another VR")
    else:
        pos += 8
    end = len(data)
    # sent as UN (a node that did not know the VR): Implicit VR Little Endian items, whatever the transfer syntax
    # (PS3.5 6.2.2), as pydicom reads them
    items_implicit = implicit or vr == b"UN"
    if length == _UNDEFINED:
        cut[tag], pos = _sequence(data, pos, end, items_implicit, True)
        return pos
    if pos + length > end:
        raise RawDataError("sequence runs past the end of the file")
    cut[tag] = _sequence(data, pos, pos + length, items_implicit, False)[0]
    return pos + length


def _element(
    data: bytes,
    pos: int,
    tag: int,
    raw_vr: bytes,
    length: int,
    implicit: bool,
    last: int,
    out: dict[BaseTag, RawDataElement | DataElement],
) -> int:
    """One data element as pydicom's data_element_generator yields it; returns the position after it."""
    if tag <= last:
        raise _Unusual("elements out of order")
    vr: str | None = None
    if implicit:
        pos += 8
    else:
        if raw_vr not in _VALID_VRS:
            raise _Unusual("unknown VR")
        vr = raw_vr.decode("ascii")
        if raw_vr in _LONG_VRS:
            length = _U32(data, pos + 8)[0]
            pos += 12
        else:
            pos += 8
    end = len(data)
    if length == _UNDEFINED:
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                raise _Unusual("undefined length private element") from None
        if vr not in ("SQ", "UN"):
            raise _Unusual("undefined length value that is not a sequence")
        try:
            _, stop = _sequence(data, pos, end, implicit, True)
        except (RawDataError, struct.error):
            raise _Unusual("malformed sequence") from None
        charset = out.get(BaseTag(_CHARSET))
        encoding = _encoding(charset) if charset is not None else default_encoding
        fp = io.BytesIO(data)
        fp.seek(pos)
        try:
            seq = read_sequence(fp, implicit, True, length, encoding)
        except Exception:  # pydicom's own reading decides: dcmread gives the reason
            raise _Unusual("pydicom cannot read the sequence") from None
        if fp.tell() != stop:
            raise _Unusual("sequence end differs")
        out[BaseTag(tag)] = DataElement(BaseTag(tag), "SQ", seq, pos, is_undefined_length=True)
        return stop
    if pos + length > end:
        raise _Unusual("value runs past the end")
    value = data[pos : pos + length] if length > 0 else empty_value_for_VR(vr, raw=True)
    out[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, length, value, pos, implicit, True)  # type: ignore[arg-type]
    return pos + length


def _encoding(charset: RawDataElement | DataElement) -> str | list[str]:
    """The Python codecs of a (0008,0005) element, converted as pydicom's reader does."""
    if not isinstance(charset, RawDataElement):
        raise _Unusual("converted character set")
    return convert_encodings(convert_raw_data_element(charset).value)
