"""DICOM character sets: strict decoding of text values (PS3.5 §6.1, PS3.3 C.12.1.1.2).

* **Which set.** The Specific Character Set (0008,0005) of a dataset applies to its text values (SH, LO, ST,
  LT, UT, UC, PN) and to every sequence item nested in it. A sequence item (an SR content item, for example)
  that carries its own (0008,0005) replaces the enclosing set for itself *and* the items nested in it
  (PS3.3 C.12.1.1.2). Callers pass a :class:`Charset` down the tree and switch to :meth:`Charset.child`
  where an item declares its own.
* **How.** Single-byte sets (ISO_IR 100, 101, 109, 110, 126, 127, 138, 144, 148, 166, 13), UTF-8
  (ISO_IR 192), GB18030 and GBK decode directly. With code extensions (``ISO 2022 IR ...``, PS3.5 §6.1.2.5)
  each part of a value that starts with an escape sequence is decoded in the set the sequence designates,
  which must be one the value of (0008,0005) declares (or ASCII); CR, LF, TAB, FF (and ``\\`` between
  values, ``^`` and ``=`` in PN) return to the initial set (PS3.5 §6.1.2.5.3). The escape tables and the
  Python codecs are pydicom's (``pydicom.charset``), so every set pydicom supports is supported here,
  including ISO 2022 IR 87/159 (Japanese), 149 (Korean) and 58 (Chinese).
* **Never U+FFFD.** Bytes that are not valid in the declared set raise :class:`UndecodableText`
  (set, attribute and byte offset; never the text). The SR readers turn it into a rejection naming the
  content item: a report whose words were replaced by ``\ufffd`` would be published with a changed meaning.
* **Undeclared.** Without (0008,0005) the default repertoire ISO_IR 6 applies; bytes above 0x7F, which it
  does not allow, are read as UTF-8 when they are valid UTF-8, else as ISO 8859-1 (as pydicom and most archives
  do: no byte is lost or replaced).
* **Unknown terms.** Common misspellings are corrected as pydicom does (``ISO IR 100``, ``ISO-2022-IR 87``);
  a Python codec name is accepted; any other term decodes ASCII text only, and non-ASCII text under it is
  :class:`UndecodableText` (the bytes' meaning is unknown).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from pydicom.charset import CODES_TO_ENCODINGS, default_encoding, handled_encodings, python_encoding
from pydicom.datadict import keyword_for_tag

if TYPE_CHECKING:
    from pipelines.dicom_sr.reader import Code, Ref

__all__ = [
    "DEFAULT",
    "UTF8",
    "Charset",
    "TextDecoder",
    "UndecodableText",
    "ascii_value",
    "charset_from_encodings",
    "charset_of",
    "json_decoder",
]

_ESC = 0x1B
_FRAGMENTS = re.compile(rb"(^[^\x1b]+|\x1b[^\x1b]*)")
_TEXT_DELIMS = frozenset(b"\r\n\t\f")  # PS3.5 §6.1.2.5.3: LT, ST, UT
_VALUE_DELIMS = _TEXT_DELIMS | {0x5C}  # SH, LO, UC: also the value delimiter
_PN_DELIMS = _VALUE_DELIMS | {0x5E, 0x3D}  # PN: also component '^' and group '='
_DELIMS = {b"PN": _PN_DELIMS, b"SH": _VALUE_DELIMS, b"LO": _VALUE_DELIMS, b"UC": _VALUE_DELIMS}
_STANDALONE = {"ISO_IR 192", "GB18030", "GBK"}  # may not be combined with code extensions (PS3.3 C.12.1.1.2)
_TERM_OF = {enc: term for term, enc in reversed(python_encoding.items()) if term}  # python codec -> a DICOM term


class UndecodableText(ValueError):
    """A text value whose bytes are not valid in its declared Specific Character Set. PHI-free: the message
    names the set, the attribute (when known) and the byte offset, never the value."""

    def __init__(self, charset: str, offset: int, *, tag: int | None = None, unknown: bool = False) -> None:
        self.charset, self.offset, self.tag, self.unknown = charset, offset, tag, unknown
        super().__init__(self._message())

    def _message(self) -> str:
        what = "" if self.tag is None else f"{_attribute(self.tag)} "
        if self.unknown:
            return (f"{what}has non-ASCII bytes under Specific Character Set '{self.charset}', "
                    "which is not a DICOM defined term")  # fmt: skip
        return f"{what}is not valid '{self.charset}' text (byte offset {self.offset})"

    def at(self, tag: int) -> UndecodableText:
        """The same error, naming the attribute it was found in."""
        return self if self.tag is not None else UndecodableText(self.charset, self.offset, tag=tag,
                                                                  unknown=self.unknown)  # fmt: skip


def _attribute(tag: int) -> str:
    name = keyword_for_tag(tag) or "attribute"
    return f"{name} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(frozen=True, slots=True)
class Charset:
    """A resolved Specific Character Set: the label used in reasons (the DICOM terms), the Python codecs
    (``None`` for an unknown term) and whether ISO 2022 code extensions are in use."""

    label: str
    encodings: tuple[str, ...] | None
    extensions: bool = False
    _children: dict[bytes, Charset] = field(default_factory=dict, compare=False, repr=False)
    #: Memos of the raw reader, shared by every file in this set: decoded code items and Referenced SOP items
    #: by their raw values (pure functions of the bytes and this set; emptied when full, see rawtree).
    codes: dict[tuple[object, ...], Code | None] = field(default_factory=dict, compare=False, repr=False)
    refs: dict[tuple[object, ...], Ref] = field(default_factory=dict, compare=False, repr=False)

    def decode(self, raw: bytes, vr: bytes = b"UT") -> str:
        """Decode one attribute value (all its values, backslash-joined) of text VR ``vr``.

        Raises :class:`UndecodableText` when a byte sequence is not valid in this set."""
        encodings = self.encodings
        if encodings is None:
            try:
                return raw.decode("ascii")
            except UnicodeDecodeError as exc:
                raise UndecodableText(self.label, exc.start, unknown=True) from None
        if not self.extensions or _ESC not in raw:
            if encodings[0] == "iso8859" and not raw.isascii():
                # The default repertoire (ISO_IR 6, no (0008,0005)) allows no byte above 0x7F: such bytes are a
                # set nobody declared. Valid UTF-8 is read as UTF-8 (ISO 8859-1 text is practically never valid
                # UTF-8, while UTF-8 read as 8859-1 is mojibake: "GrÃ¶Ã" + U+009F), else as ISO 8859-1, as before;
                # the HL7 side reads undeclared bytes the same way (UTF-8, else the 8-bit guess).
                try:
                    return raw.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            try:
                return raw.decode(encodings[0])
            except UnicodeDecodeError as exc:
                raise UndecodableText(self.label, exc.start) from None
        return self._decode_extended(raw, encodings, _DELIMS.get(vr, _TEXT_DELIMS))

    def _decode_extended(self, raw: bytes, encodings: tuple[str, ...], delimiters: frozenset[int]) -> str:
        """PS3.5 §6.1.2.5: ISO 2022 code extensions, one fragment per escape sequence."""
        out: list[str] = []
        pos = 0
        for fragment in _FRAGMENTS.findall(raw):
            try:
                out.append(self._fragment(fragment, encodings, delimiters))
            except UnicodeDecodeError as exc:
                raise UndecodableText(self.label, pos + exc.start) from None
            except LookupError:
                raise UndecodableText(self.label, pos) from None
            pos += len(fragment)
        return "".join(out)

    @staticmethod
    def _fragment(fragment: bytes, encodings: tuple[str, ...], delimiters: frozenset[int]) -> str:
        if fragment[0] != _ESC:
            return fragment.decode(encodings[0])
        size = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
        encoding = CODES_TO_ENCODINGS.get(fragment[:size])
        if encoding is None or (encoding not in encodings and encoding != default_encoding):
            raise LookupError("escape sequence of a set the value does not declare")
        if encoding in handled_encodings:  # the codec reads its own escape sequences
            return fragment.decode(encoding)
        body = fragment[size:]
        cut = next((i for i, byte in enumerate(body) if byte in delimiters), None)
        if cut is None:
            return body.decode(encoding)
        return body[:cut].decode(encoding) + body[cut:].decode(encodings[0])

    def child(self, value: bytes) -> Charset:
        """The set of a nested item that carries its own (0008,0005) raw value ``value`` (PS3.3 C.12.1.1.2);
        an empty value keeps this one."""
        found = self._children.get(value)
        if found is None:
            terms = [t.strip(" \x00") for t in value.decode("ascii", "replace").split("\\")]
            found = charset_of(terms) if any(terms) else self
            if len(self._children) < 64:
                self._children[value] = found
        return found


DEFAULT = Charset("ISO_IR 6", ("iso8859",))
UTF8 = Charset("ISO_IR 192", ("utf-8",))


def charset_of(value: str | bytes | Sequence[str] | None) -> Charset:
    """The :class:`Charset` of a (0008,0005) value: a string (``'ISO_IR 100'``), its raw bytes
    (``b'\\\\ISO 2022 IR 87'``) or the list pydicom gives for a multi-valued one."""
    if value is None:
        return DEFAULT
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    terms = value.split("\\") if isinstance(value, str) else [str(v) for v in value]
    return _charset(tuple(t.strip(" \x00") for t in terms))


@lru_cache(maxsize=128)
def _charset(terms: tuple[str, ...]) -> Charset:
    if not any(terms):
        return DEFAULT
    first = _correct(terms[0]) if terms[0] else ""
    if len(terms) == 1 or first in _STANDALONE or (first and "2022" not in first):
        terms = (terms[0],)  # a stand-alone or non-extension first value: the others cannot apply
    encodings: list[str] = []
    for term in terms:
        encoding = _encoding(term)
        if encoding is None:
            return Charset("\\".join(terms), None)
        encodings.append(encoding)
    label = "\\".join(terms)
    return Charset(label, tuple(encodings), extensions=any("2022" in _correct(t) for t in terms if t))


def _correct(term: str) -> str:
    """pydicom's spelling fixes: 'ISO IR 100' / 'ISO-IR 100' -> 'ISO_IR 100', 'ISO-2022-IR 87' -> 'ISO 2022 IR 87'."""
    term = term.strip().upper()
    if re.match("^ISO[^_]IR", term):
        return "ISO_IR" + term[6:]
    if re.match("^(?=ISO.2022.IR.)(?!ISO 2022 IR )", term):
        return "ISO 2022 IR " + term[12:]
    return term


def _encoding(term: str) -> str | None:
    if not term:
        return python_encoding[""]  # an empty first value: the default repertoire
    found = python_encoding.get(term) or python_encoding.get(_correct(term))
    if found is not None:
        return found
    try:
        return codecs.lookup(term).name  # pydicom also accepts a Python codec name
    except LookupError:
        return None


def ascii_value(raw: bytes, tag: int) -> str:
    """The first value of an element whose VR allows the default repertoire only (DA, TM, DT, UI, ...),
    stripped of padding; raises UndecodableText (set 'ISO_IR 6') for any other byte."""
    first = raw.split(b"\\", 1)[0].strip(b" \x00")
    try:
        return first.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise UndecodableText(DEFAULT.label, exc.start, tag=tag) from None


def charset_from_encodings(encodings: str | Sequence[str]) -> Charset:
    """The :class:`Charset` for pydicom's resolved Python codecs (``Dataset._character_set``, which already
    applies the item-level inheritance of PS3.3 C.12.1.1.2)."""
    if isinstance(encodings, str):
        encodings = [encodings]
    encodings = tuple(encodings) or (default_encoding,)
    return _from_encodings(encodings)


@lru_cache(maxsize=64)
def _from_encodings(encodings: tuple[str, ...]) -> Charset:
    label = "\\".join(_TERM_OF.get(e, e) for e in encodings)
    return Charset(label, encodings, extensions=len(encodings) > 1 or "2022" in label)


class TextDecoder:
    """Decodes text values strictly in one Specific Character Set (:mod:`pipelines.dicom_sr.charset`);
    remembers the codes it decoded. :meth:`child` gives the decoder of a nested item that declares its own
    set (PS3.3 C.12.1.1.2); a ``fixed`` decoder (DICOM JSON, whose text is Unicode) ignores such sets."""

    __slots__ = ("_children", "charset", "codes", "fixed", "refs")

    def __init__(self, charset: Charset, *, fixed: bool = False) -> None:
        self.charset = charset
        self.fixed = fixed
        self.codes = charset.codes  # the raw reader's memos: per set, as decoding depends on the set only
        self.refs = charset.refs
        self._children: dict[object, TextDecoder] = {}

    def __call__(self, raw: bytes, vr: bytes = b"UT") -> str:
        """Raises :class:`~pipelines.dicom_sr.charset.UndecodableText` (never returns U+FFFD for bad bytes)."""
        return self.charset.decode(raw, vr)

    def child(self, value: object) -> TextDecoder:
        """The decoder for an item whose (0008,0005) element is ``value`` ((vr, raw bytes))."""
        if self.fixed or not isinstance(value, tuple):
            return self
        found = self._children.get(value)
        if found is None:
            charset = self.charset.child(bytes(value[1]))
            found = self if charset is self.charset else TextDecoder(charset)
            self._children[value] = found
        return found


def json_decoder() -> TextDecoder:
    """The decoder of DICOM JSON values (UTF-8 encoded by :func:`cut_json`)."""
    return TextDecoder(UTF8, fixed=True)
