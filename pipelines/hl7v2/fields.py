"""Field, component and escape handling for tokenized ER7 (HL7 v2.5.1 chapter 2: 2.5.4 separators, 2.7
escape sequences, 2.7.6 formatted text).

Everything here works on one raw field string and the message delimiters. A value is split on the
declared separators first (repetition, component, subcomponent) and unescaped last, on the leaf, so
delimiters hidden in escapes (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``) never split anything. A delimiter that MSH-2 does not
declare is ``NUL`` in :class:`~pipelines.hl7v2.er7.Delimiters` (NUL never occurs in a message), so it
splits nothing and, without an escape character, nothing is unescaped.

Escape decoding (:func:`unescape`):

* ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` -> the declared field / component / subcomponent / repetition / escape character;
* ``\\Xhh..\\``: hexadecimal bytes, any number of digits (an odd count gets a leading 0), upper or lower case;
  consecutive ``\\X..\\`` escapes form one byte string, so a character or a CR LF split over several
  escapes decodes once (``\\X0D\\\\X0A\\`` is one line break, like ``\\X0D0A\\``; ``\\XC3\\\\XA4\\`` is one
  ``ä``). The bytes are read as UTF-8, else in the message character set, else Windows-1252/Latin-1 (never U+FFFD);
* 2.7.6 formatting, rendered to plain text without gluing or dropping words (troff semantics, where these
  commands come from): ``\\.br\\`` a line break; ``\\.sp n\\`` ends the current line (when it holds text) and
  skips ``n`` lines (default 1), so ``a\\.sp\\b`` is ``a\\n\\nb`` and a leading ``\\.sp\\`` is one break, as 2.7.6 says
  ``^\\.sp\\`` equals ``\\.br\\``; ``\\.sk n\\`` ``n`` spaces (default 1); ``\\.in n\\``, ``\\.ti n\\``, ``\\.ce\\``,
  ``\\.nf\\``, ``\\.fi\\`` end the current line when it holds text (indentation, centring and fill mode are
  layout, not text); ``\\H\\``/``\\N\\`` (highlighting) add nothing; locally defined ``\\Z..\\`` and the
  character-set escapes ``\\C..\\``/``\\M..\\`` are dropped, a ``\\Z..\\`` between two words leaves a space;
* an unknown or unterminated escape stays as written.

The result never holds a control character: form feed and vertical tab become line breaks, CR LF and CR
become LF, other characters below U+0020 (but TAB) are dropped (:func:`pipelines.common.primitives.clean_text`).
:func:`escape` is the inverse for round trips (tests, ACK text).
"""

from __future__ import annotations

import re

from pipelines.common.primitives import clean_text
from pipelines.hl7v2.er7 import NONE, Delimiters

__all__ = ["component", "components", "escape", "field", "leaf", "repetitions", "subcomponents", "unescape"]


def field(seg: list[str], n: int) -> str:
    """Raw field ``n`` (1-based, HL7 numbering) of a segment, or ''."""
    return seg[n] if n < len(seg) else ""


def repetitions(raw: str, d: Delimiters) -> list[str]:
    return raw.split(d.repetition) if raw else []


def components(raw: str, d: Delimiters) -> list[str]:
    """Components of the first repetition, still escaped."""
    return raw.split(d.repetition, 1)[0].split(d.component) if raw else []


def component(raw: str, d: Delimiters, n: int, *, unescaped: bool = True) -> str:
    """Component ``n`` (1-based) of the first repetition, unescaped (subcomponent separators kept as written;
    use :func:`leaf` for one subcomponent)."""
    parts = components(raw, d)
    value = parts[n - 1] if n - 1 < len(parts) else ""
    return unescape(value, d) if unescaped else value


def leaf(raw: str, d: Delimiters, comp: int = 1, sub: int = 1, charset: str = "latin-1") -> str:
    """Subcomponent ``sub`` of component ``comp`` (1-based) of the first repetition, split first and then
    unescaped."""
    parts = components(raw, d)
    value = parts[comp - 1] if comp - 1 < len(parts) else ""
    subs = value.split(d.subcomponent)
    return unescape(subs[sub - 1], d, charset) if sub - 1 < len(subs) else ""


def subcomponents(raw: str, d: Delimiters) -> list[str]:
    return [unescape(p, d) for p in raw.split(d.subcomponent)]


_HEX = re.compile(r"[0-9A-Fa-f]*")
_MAX_SKIP = 100  # bound for \.sp n\ and \.sk n\ (a typo like \.sp 9999999\ must not allocate megabytes)


def _count(arg: str, default: int) -> int:
    arg = arg.strip().lstrip("+")
    if not arg.isdigit():
        return default
    return min(int(arg), _MAX_SKIP)


def unescape(value: str, d: Delimiters, charset: str = "latin-1") -> str:
    """Decode the HL7 escape sequences of one leaf value (see the module docstring). Returns clean text."""
    if d.escape not in value:  # the common case (also when MSH-2 declares no escape character: NONE)
        if value == '""':
            return ""  # the HL7 null value (v2.5.1 2.5.3): no value, never two quote marks
        return value if d.clean or value.isprintable() else clean_text(value)
    esc = d.escape
    out: list[str] = []
    pending = bytearray()  # bytes of consecutive \X..\ escapes, decoded together
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            if pending:
                out.append(_decode_bytes(pending, charset))
                pending.clear()
            j = value.find(esc, i)
            j = n if j < 0 else j
            out.append(value[i:j])
            i = j
            continue
        end = value.find(esc, i + 1)
        if end < 0:  # lone escape character: keep it literally
            if pending:
                out.append(_decode_bytes(pending, charset))
                pending.clear()
            out.append(value[i:])
            break
        code = value[i + 1 : end]
        if code[:1] in ("X", "x") and _HEX.fullmatch(code, 1) is not None:
            digits = code[1:]
            pending += bytes.fromhex(digits if len(digits) % 2 == 0 else "0" + digits)
            i = end + 1
            continue
        if pending:
            out.append(_decode_bytes(pending, charset))
            pending.clear()
        _escape_value(code, d, out, value[i : end + 1], value, end + 1)
        i = end + 1
    if pending:
        out.append(_decode_bytes(pending, charset))
    return clean_text("".join(out))


def _decode_bytes(raw: bytearray, charset: str) -> str:
    data = bytes(raw)
    for codec in ("utf-8", charset):
        try:
            text = data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
        if _CONTROL.search(text) is not None and len(data) % 2 == 0:
            # ``\X041F\``: four hex digits per character, written as the UTF-16 code unit (U+041F), not as
            # bytes (EOT, US: no text at all). Where the byte reading gives control characters and the code-unit
            # reading gives text, the code units are what was meant; ``\X000D\`` / ``\X00E0\`` read the same.
            try:
                units = data.decode("utf-16-be")
            except UnicodeDecodeError:
                return text
            if _CONTROL.search(units) is None and not _SURROGATE_OR_PRIVATE.search(units):
                return units
        return text
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# C0 controls that are not text (TAB, LF, CR are; NUL is the padding of ``\X000D\`` and is dropped anyway).
_CONTROL = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f]")
_SURROGATE_OR_PRIVATE = re.compile("[\ud800-\udfff\ue000-\uf8ff\ufffe\uffff]")


def _line_has_text(out: list[str]) -> bool:
    for chunk in reversed(out):
        if chunk:
            return chunk[-1] != "\n"
    return False


def _escape_value(code: str, d: Delimiters, out: list[str], literal: str, value: str, after: int) -> None:
    if len(code) == 1 and code in "FSTRE":
        out.append({"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape}[code])
        return
    if code in ("H", "N"):
        return
    if code[:1] == ".":
        cmd, arg = code[1:3].lower(), code[3:]
        if cmd == "br":
            out.append("\n")
        elif cmd == "sp":
            out.append("\n" * (_count(arg, 1) + (1 if _line_has_text(out) else 0)))
        elif cmd == "sk":
            out.append(" " * _count(arg, 1))
        elif cmd in ("in", "ti", "ce", "nf", "fi"):
            if _line_has_text(out):
                out.append("\n")
        else:
            out.append(literal)
        return
    if code[:1] == "Z":
        before = _line_has_text(out) and not "".join(out)[-1:].isspace()
        if before and after < len(value) and not value[after].isspace():
            out.append(" ")  # an unknown local sequence between two words never glues them
        return
    if code[:1] in ("C", "M"):
        return  # ISO 2022 character-set switches: no printable content
    out.append(literal)


def escape(value: str, d: Delimiters) -> str:
    """ER7-escape one leaf value (inverse of :func:`unescape` for clean text): the escape character first,
    then the separators, line breaks as ``\\.br\\`` and TAB as ``\\X09\\``. Raises ``ValueError`` when the value
    holds a declared delimiter or a line break but MSH-2 declares no escape character."""
    esc = d.escape
    specials = [c for c in (d.field, d.component, d.repetition, d.subcomponent) if c != NONE]
    value = clean_text(value)
    if esc == NONE:
        if "\n" in value or any(c in value for c in specials):
            raise ValueError("the value holds a delimiter or line break and MSH-2 declares no escape character")
        return value
    table = {esc: f"{esc}E{esc}", "\n": f"{esc}.br{esc}", "\t": f"{esc}X09{esc}"}
    for ch, letter in ((d.field, "F"), (d.component, "S"), (d.subcomponent, "T"), (d.repetition, "R")):
        if ch != NONE:
            table[ch] = f"{esc}{letter}{esc}"
    return "".join(table.get(ch, ch) for ch in value)
