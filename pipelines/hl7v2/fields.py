"""Field, component and escape handling for tokenized ER7 (HL7 v2 chapter 2, section 2.7 escapes).

Everything here works on one raw field string and the message delimiters; unescaping happens last, on
the leaf value, so delimiters hidden in escapes (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``) never split anything.
"""

from __future__ import annotations

import re

from pipelines.hl7v2.er7 import Delimiters

__all__ = ["component", "components", "field", "repetitions", "subcomponents", "unescape"]


def field(seg: list[str], n: int) -> str:
    """Raw field ``n`` (1-based, HL7 numbering) of a segment, or ''."""
    return seg[n] if n < len(seg) else ""


def repetitions(raw: str, d: Delimiters) -> list[str]:
    return raw.split(d.repetition) if raw else []


def components(raw: str, d: Delimiters) -> list[str]:
    """Components of the first repetition, still escaped."""
    return raw.split(d.repetition, 1)[0].split(d.component) if raw else []


def component(raw: str, d: Delimiters, n: int, *, unescaped: bool = True) -> str:
    """Component ``n`` (1-based) of the first repetition, unescaped, with subcomponents joined by '&'."""
    parts = components(raw, d)
    value = parts[n - 1] if n - 1 < len(parts) else ""
    return unescape(value, d) if unescaped else value


def subcomponents(raw: str, d: Delimiters) -> list[str]:
    return [unescape(p, d) for p in raw.split(d.subcomponent)]


_HEX = re.compile(r"^[0-9A-Fa-f]*$")


def unescape(value: str, d: Delimiters, charset: str = "latin-1") -> str:
    """Decode HL7 escape sequences in a leaf value. Formatting escapes: ``.br``/``.sp`` -> newline,
    ``.in``/``.ti``/``.ce``/``.sk``/``.fi``/``.nf`` and highlighting ``H``/``N`` dropped, ``Xhh`` -> bytes."""
    esc = d.escape
    if not value or esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:  # lone escape character: keep it literally
            out.append(value[i:])
            break
        code = value[i + 1 : end]
        out.append(_escape_value(code, d, charset, value[i : end + 1]))
        i = end + 1
    return "".join(out)


def _escape_value(code: str, d: Delimiters, charset: str, literal: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape}
    if code in simple:
        return simple[code]
    if code in ("H", "N"):
        return ""
    lower = code.lower()
    if lower.startswith((".br", ".sp")):
        count = lower[3:].strip().lstrip("+")
        return "\n" * (int(count) if count.isdigit() and 0 < int(count) < 20 else 1)
    if lower.startswith((".in", ".ti", ".ce", ".sk", ".fi", ".nf")):
        return ""
    if code[:1] == "X" and _HEX.match(code[1:]) and len(code) % 2 == 1:
        raw = bytes.fromhex(code[1:])
        if raw in (b"\r\n", b"\r", b"\n", b"\x0d\x0a"):
            return "\n"
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode(charset, errors="replace")
    if code[:1] in ("Z", "C", "M"):
        return ""  # locally defined / charset switching escapes: no printable content
    return literal
