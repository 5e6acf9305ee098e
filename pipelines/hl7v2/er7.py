"""A purpose-built ER7 tokenizer: bytes -> segments -> fields, unescaped only after splitting.

HL7 v2 chapter 2 rules: MSH-1 is the field separator, MSH-2 the encoding characters (component,
repetition, escape, subcomponent); escape sequences are decoded *after* a field is split into
components (mappings.md §7.4), so ``\\T\\`` inside OBR-4 never breaks the components. Character sets come
from MSH-18; undeclared non-UTF-8 bytes are read as Windows-1252/Latin-1 (the usual legacy RIS case).

The tokenizer is deliberately small: a parsed message is a list of segments, each a list of raw field
strings indexed by HL7 field number (``seg[3]`` is field 3; for MSH, ``seg[1]`` is the field separator).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

from pipelines.errors import ParseError

__all__ = [
    "CHARSETS",
    "NONE",
    "Delimiters",
    "Message",
    "clean_delimiters",
    "declared_but_invalid",
    "decode_message",
    "parse_message",
]

#: Stands for a delimiter that MSH-2 does not declare. NUL never occurs in tokenized text (``map_message``
#: drops stray NUL bytes, :func:`parse_message` rejects text holding one), so splitting on it splits nothing
#: and no escape sequence is recognised.
NONE = "\x00"

# MSH-18 values (HL7 table 0211) -> Python codecs.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "ISO IR6": "ascii",
    "ISO IR100": "latin-1",
    "ISO IR101": "iso8859-2",
    "ISO IR109": "iso8859-3",
    "ISO IR110": "iso8859-4",
    "ISO IR144": "iso8859-5",
    "ISO IR127": "iso8859-6",
    "ISO IR126": "iso8859-7",
    "ISO IR138": "iso8859-8",
    "ISO IR148": "iso8859-9",
    "ISO IR192": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UTF-16": "utf-16",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc-kr",
    "BIG-5": "big5",
    "ISO IR87": "iso2022_jp",
    "ISO IR13": "shift_jis",
    "ISO IR14": "shift_jis",  # JIS X 0201 Roman/Katakana; shift_jis is its superset
    "ISO IR159": "iso2022_jp_2",
    "CNS 11643-1992": "big5",
}

# Segment ids at which a line may be cut when a sender glued segments with spaces or "<cr>" literals.
_KNOWN_SEGMENTS = (
    "PID|PD1|PV1|PV2|ORC|OBR|OBX|NTE|ZDS|IPC|SPM|TQ1|TQ2|CTD|CTI|FT1|SFT|PRT|TXA|NK1|AL1|DG1|MSA|ERR|EVN|ROL|"
    "Z[A-Z0-9]{2}"
)


@dataclass(frozen=True, slots=True)
class Delimiters:
    """MSH-1 and the MSH-2 encoding characters (HL7 v2.5.1 2.5.4); :data:`NONE` for one MSH-2 leaves out."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    clean: bool = False  # the message holds no control character but TAB/CR/LF: raw leaves need no cleaning
    # The hash, computed once: delimiters key the field caches (CWE, XCN, HD, OBX-3), hashed ~10x a message.
    _hash: int = dataclasses.field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.field, self.component, self.repetition, self.escape, self.subcomponent, self.clean)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Delimiters], tuple[str, str, str, str, str, bool]]:
        # rebuilt through __init__, so another process (another hash seed) computes its own hash
        return Delimiters, (self.field, self.component, self.repetition, self.escape, self.subcomponent, self.clean)


@dataclass(slots=True)
class Message:
    """A tokenized message: ``segments`` in order, each a list of raw (still escaped) field strings."""

    segments: list[list[str]]
    delimiters: Delimiters
    charset: str

    def first(self, name: str) -> list[str] | None:
        for seg in self.segments:
            if seg[0] == name:
                return seg
        return None


@functools.lru_cache(maxsize=64)
def clean_delimiters(d: Delimiters) -> Delimiters:
    """``d`` with ``clean`` set (the message holds no control character but TAB/CR/LF); one shared object per
    delimiter set, so the caches keyed on delimiters compare them by identity."""
    return Delimiters(d.field, d.component, d.repetition, d.escape, d.subcomponent, clean=True)


def decode_message(raw: bytes) -> tuple[str, str]:
    """Decode message bytes using MSH-18 (or UTF-8, then Windows-1252 when undeclared). Returns (text, codec)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    declared = _declared_charset(raw)
    codec = CHARSETS.get(declared.upper(), "") if declared else ""
    if codec and codec not in ("ascii", "utf-8"):
        try:
            return raw.decode(codec), codec
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        # Declared ASCII/UTF-8 (or nothing) but the bytes are legacy 8-bit: the usual RIS Latin-1 case.
        return raw.decode("cp1252", errors="replace") if _cp1252_ok(raw) else raw.decode("latin-1"), "latin-1"


def declared_but_invalid(raw: bytes) -> str | None:
    """Why a message decoded as Latin-1 cannot be read in the character set its MSH-18 declares (HL7 table
    0211), or None. :func:`decode_message` falls back to UTF-8, then Latin-1, when the declared set fails; a
    Latin-1 reading of, say, ``ISO IR87`` or ``GB 18030-2000`` bytes is mojibake that would be published as text.
    The mapper rejects such a message with this reason (the DICOM side does the same, PS3.5 6.1)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    declared = _declared_charset(raw)
    codec = CHARSETS.get(declared.upper(), "") if declared else ""
    if not codec or codec in ("ascii", "utf-8", "latin-1", "cp1252"):
        return None
    try:
        raw.decode(codec)
    except UnicodeDecodeError as exc:
        return (
            f"MSH-18 declares {declared.upper()} ({codec}) but the message bytes are not valid in it "
            f"(byte offset {exc.start}) nor UTF-8: the text cannot be read as sent"
        )
    except LookupError:
        return None
    return None


def _cp1252_ok(raw: bytes) -> bool:
    return not any(b in raw for b in (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d"))


def _declared_charset(raw: bytes) -> str:
    end = min((i for i in (raw.find(b"\r"), raw.find(b"\n")) if i >= 0), default=len(raw))
    head = raw[:end]
    if len(head) < 4:
        return ""
    fs = head[3:4]
    fields = head.split(fs)
    # fields[0] = "MSH", fields[1] = MSH-2, so MSH-n is fields[n-1]
    if len(fields) > 17:
        value = fields[17].split(b"~")[0].split(fields[1][:1] or b"^")[0] if fields[1] else fields[17]
        return value.decode("ascii", errors="ignore").strip()
    return ""


def parse_message(text: str) -> Message:
    """Tokenize one message (text starting with ``MSH``)."""
    if not text.startswith("MSH") or len(text) < 8:
        raise ParseError("does not start with an MSH segment")
    if NONE in text:
        raise ParseError("binary data (NUL characters) in an HL7 v2 message")
    fs = text[3]
    if fs.isalnum() or fs in "\r\n ":
        raise ParseError("MSH-1 field separator is missing or invalid")
    enc_end = text.find(fs, 4)
    if enc_end < 0:
        raise ParseError("MSH-2 encoding characters are missing")
    delims = _delimiters(fs, text[4:enc_end])
    lines = _segment_lines(text, fs)
    if _has_continuations("\r".join(lines), fs):
        lines = _join_continuations(lines, fs)
    segments: list[list[str]] = []
    for line in lines:
        if line[3:4] != fs or not line[:3].isalnum():  # not the usual "XXX|...": check it
            if len(line) < 3 or not line[:3].isalnum():
                if line.strip():
                    raise ParseError(f"segment {len(segments) + 1} is not a valid segment (no 3-character id)")
                continue
            if len(line) > 3 and line[3] != fs:
                raise ParseError(
                    f"segment {len(segments) + 1} ({_safe(line[:3])}) has no field separator after its id"
                )
        parts = line.split(fs)
        if parts[0] == "MSH":
            parts.insert(1, fs)
        segments.append(parts)
    if len(segments) < 2:
        raise ParseError("truncated message: only an MSH segment")
    return Message(segments=segments, delimiters=delims, charset="")


@functools.lru_cache(maxsize=32)
def _continuation_pattern(fs: str) -> re.Pattern[str]:
    """A line after a segment end that does not start with an (ASCII) id and the field separator."""
    return re.compile(r"\r(?![A-Za-z0-9]{3}" + re.escape(fs) + r")[^\r]{4}")


def _has_continuations(joined: str, fs: str) -> bool:
    """Could :func:`_join_continuations` change anything? One regex pass that stops only at segment ends; a
    "yes" for a non-ASCII id (``isalnum`` takes it) only costs the exact check."""
    return _continuation_pattern(fs).search(joined) is not None


def _join_continuations(lines: list[str], fs: str) -> list[str]:
    """Senders that wrap long segments (base64 ED data, long text) put the rest on a new line that does not
    start with a segment id and field separator: glue it back to its segment (with a line feed)."""
    out: list[str] = []
    for line in lines:
        if len(line) > 3 and (line[3] != fs or not line[:3].isalnum()) and out:
            out[-1] = out[-1] + "\n" + line
        else:
            out.append(line)
    return out


def _safe(name: str) -> str:
    return name if name.isalnum() else "?"


@functools.lru_cache(maxsize=64)  # pure and immutable; a feed declares the same MSH-1/MSH-2 on every message
def _delimiters(fs: str, enc: str) -> Delimiters:
    """MSH-2 declares, in order, the component, repetition, escape and subcomponent characters (v2.5.1
    2.5.4; a fifth, the v2.7 truncation character, is ignored). MSH-2 may declare fewer: the missing ones
    do not exist in the message (no escape character: nothing is an escape sequence). A character that
    repeats an earlier delimiter, or is blank or alphanumeric, declares nothing."""
    chars: list[str] = []
    seen = {fs}
    for c in enc[:4]:
        if c in seen or c.isalnum() or c.isspace():
            chars.append(NONE)
        else:
            chars.append(c)
            seen.add(c)
    chars += [NONE] * (4 - len(chars))
    comp, rep, esc, sub = chars
    return Delimiters(fs, comp, rep, esc, sub)


_KNOWN_IDS = re.compile("(?:" + _KNOWN_SEGMENTS + ")")
_KNOWN_ID_BYTES = re.compile(("(?:" + _KNOWN_SEGMENTS + ")").encode("ascii"))


@functools.lru_cache(maxsize=32)
def _glue_patterns(fs: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(prefilter, splitter) for glued segments with field separator ``fs``; compiled once per separator.
    The prefilter starts at the literal field separator (the regex engine's fast scan) and looks back for
    a space, tab or ``<cr>`` and a 3-character id; the id is then checked against the known segments."""
    f = re.escape(fs)
    prefilter = re.compile(f + r"(?:(?<=[ \t][A-Z][A-Z0-9]{2}" + f + r")|(?<=<[cC][rR]>[A-Z][A-Z0-9]{2}" + f + "))")
    glued = re.compile(r"(?:[ \t]+|<[cC][rR]>)(?=(?:" + _KNOWN_SEGMENTS + ")" + f + ")")
    return prefilter, glued


@functools.lru_cache(maxsize=32)
def _glue_table(fs: str) -> bytes | None:
    """A ``bytes.translate`` table for :func:`_maybe_glued`: A-Z and 0-9 -> ``A``, space and TAB -> `` ``,
    ``>`` stays, the field separator -> ``|``, every other byte -> ``.``. None for a separator it cannot mark."""
    if len(fs.encode("utf-8")) != 1 or fs in " \t>" or fs.isalnum():
        return None
    table = bytearray(b"." * 256)
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        table[c] = ord("A")
    table[ord(" ")] = table[ord("\t")] = ord(" ")
    table[ord(">")] = ord(">")
    table[ord(fs)] = ord("|")
    return bytes(table)


def _maybe_glued(text: str, fs: str) -> bool:
    """A necessary condition for a glued segment, found with C passes: a space, TAB or ``>`` (of ``<cr>``), then
    a known segment id, then the field separator. True when it cannot tell (an unusual separator)."""
    table = _glue_table(fs)
    if table is None:
        return True
    data = text.encode("utf-8", "surrogatepass")
    marks = data.translate(table)
    for needle in (b" AAA|", b">AAA|"):
        i = marks.find(needle)
        while i >= 0:
            if _KNOWN_ID_BYTES.fullmatch(data, i + 1, i + 4) is not None:
                return True
            i = marks.find(needle, i + 1)
    return False


def _segment_lines(text: str, fs: str) -> list[str]:
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    lines = text.split("\r")
    if not _maybe_glued(text, fs):
        return lines  # the common case: no glued segments anywhere
    prefilter, glued = _glue_patterns(fs)
    if not any(_KNOWN_IDS.fullmatch(text, m.start() - 3, m.start()) for m in prefilter.finditer(text)):
        return lines  # the common case: no glued segments anywhere
    out: list[str] = []
    for line in lines:
        out.extend(p for p in glued.split(line) if p != "")
    return out
