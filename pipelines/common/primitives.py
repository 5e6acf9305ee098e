"""FHIR R5 primitive datatypes: the one place that enforces their rules for every value the engine writes.

FHIR R5 §2.1.28.0.1 (primitive types) and the ``regex`` of each R5 core StructureDefinition:

=============  =====================================================================================
type           rule enforced here
=============  =====================================================================================
string         no character below U+0020 except TAB, CR, LF (:func:`clean_text`); never empty
markdown       as string
xhtml          narrative ``div`` built from clean text (:func:`narrative_div`); XML-escaped
code           ``[^\\s]+( [^\\s]+)*``: no leading/trailing whitespace, single inner spaces
id             ``[A-Za-z0-9\\-.]{1,64}``
uri / url      ``\\S*`` and non-empty: inner whitespace is percent-encoded
date           ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; a real calendar day
dateTime       a date precision above, or ``YYYY-MM-DDThh:mm:ss[.f{1,9}]`` **with** an offset
               (``Z`` or ``±hh:mm``, ``-13:59..+14:00``): a time without seconds gets ``:00``; a
               time without an offset gets the caller's offset (FHIR: "if hours and minutes are
               specified, a timezone offset SHALL be populated")
instant        ``YYYY-MM-DDThh:mm:ss[.f{1,9}]`` + offset (day precision at least; missing time parts
               are ``00``)
positiveInt    integer ``>= 1`` and ``<= 2^31-1``; unsignedInt ``>= 0``; integer 32-bit
decimal        finite number (no NaN/Infinity)
=============  =====================================================================================

Text rule (issue 8, FHIR string + XML 1.0 for XHTML): form feed (U+000C) and vertical tab (U+000B) become
a line feed, NEL (U+0085) too; every other C0 control, DEL, the other C1 controls and the XML
non-characters U+FFFE/U+FFFF are dropped; CR LF and lone CR become LF. Shapers call these functions
when they write a value (no extra walk of the Bundle); the checks cost one C-level ``isprintable`` for
the common clean value.

Errors: :func:`id_` raises ``ValueError`` (ids are engine-made; a bad one is a bug). The date functions
return ``None`` for a value that cannot be made valid, so the caller leaves the element out rather than
writing an invalid one.
"""

from __future__ import annotations

import math
import re
from calendar import monthrange
from html import escape as _xml_escape
from typing import Any

__all__ = [
    "clean_text",
    "clean_tree",
    "code",
    "date",
    "date_time",
    "decimal",
    "id_",
    "instant",
    "integer",
    "markdown",
    "narrative_div",
    "positive_int",
    "string",
    "unsigned_int",
    "uri",
]

# Characters that may never appear in a FHIR string / XHTML text (TAB, LF, CR are allowed).
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]|\r")
_DROP = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")
_BREAK = re.compile("\r\n|[\r\x0b\x0c\x85]")


def clean_text(value: str) -> str:
    """``value`` with the control characters FHIR forbids removed: dropped first, then form feed, vertical
    tab, NEL, CR LF and lone CR become LF (so CR NUL LF is one break); TAB and LF stay."""
    if value.isprintable():  # C fast path: no control character at all (the common case)
        return value
    if _BAD.search(value) is None:
        return value
    return _BREAK.sub("\n", _DROP.sub("", value))


def string(value: str) -> str:
    """FHIR ``string``: clean text (see :func:`clean_text`). Callers leave out an element whose value is ''."""
    return clean_text(value)


markdown = string


def code(value: str) -> str:
    """FHIR ``code``: clean text with whitespace runs collapsed to one space and trimmed ('' if nothing is
    left)."""
    if value.isprintable() and " " not in value:
        return value
    return " ".join(clean_text(value).split())


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def id_(value: str) -> str:
    """FHIR ``id`` (1-64 of ``A-Z a-z 0-9 - .``). Raises ``ValueError`` otherwise."""
    if _ID.fullmatch(value) is None:
        raise ValueError(f"not a FHIR id: {value[:80]!r}")
    return value


def uri(value: str) -> str:
    """FHIR ``uri``/``url``/``canonical``: no whitespace (inner whitespace percent-encoded, outer trimmed)."""
    if value.isprintable() and " " not in value:
        return value
    value = clean_text(value).strip()
    return re.sub(r"\s", lambda m: f"%{ord(m.group()):02X}", value)


# --- dates and times ---------------------------------------------------------------------------------------

_DATE = re.compile(r"([0-9]{4})(?:-(0[1-9]|1[0-2])(?:-(0[1-9]|[12][0-9]|3[01]))?)?")
_DATE_TIME = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]|60)(\.[0-9]{1,9})?)?"
    r"(Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?"
)
_OFFSET = re.compile(r"Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00)")


def _valid_day(year: str, month: str | None, day: str | None) -> bool:
    if int(year) == 0:
        return False
    return not (month and day and int(day) > monthrange(int(year), int(month))[1])


def date(value: str) -> str | None:
    """FHIR ``date`` (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, a real day), or None."""
    m = _DATE.fullmatch(value)
    if m is None or not _valid_day(*m.groups()):
        return None
    return value


def date_time(value: str, default_offset: str = "+00:00") -> str | None:
    """FHIR ``dateTime``: a date precision, or a time with seconds and an offset (added when missing:
    ``:00`` seconds, ``default_offset``). None when the value cannot be a dateTime."""
    if len(value) <= 10:
        return date(value)
    m = _DATE_TIME.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, offset = m.groups()
    if not _valid_day(year, month, day):
        return None
    if second is not None and offset is not None:
        return value  # already complete (the common case)
    if offset is None:
        if _OFFSET.fullmatch(default_offset) is None:
            return None
        offset = default_offset
    return f"{year}-{month}-{day}T{hour}:{minute}:{second or '00'}{frac or ''}{offset}"


def instant(value: str, default_offset: str = "+00:00") -> str | None:
    """FHIR ``instant``: day precision at least; missing time parts are ``00``, a missing offset is
    ``default_offset``. None when the value has no full date or is invalid."""
    if len(value) == 10:
        value = f"{value}T00:00:00"
    elif len(value) < 10:
        return None
    return date_time(value, default_offset)


# --- numbers -----------------------------------------------------------------------------------------------

_INT32 = 2**31 - 1


def integer(value: int) -> int:
    """FHIR ``integer`` (32-bit signed). Raises ``ValueError`` outside the range."""
    if not -_INT32 - 1 <= value <= _INT32:
        raise ValueError(f"integer out of range: {value}")
    return value


def unsigned_int(value: int) -> int | None:
    """FHIR ``unsignedInt`` (0..2^31-1) or None."""
    return value if 0 <= value <= _INT32 else None


def positive_int(value: int) -> int | None:
    """FHIR ``positiveInt`` (1..2^31-1) or None."""
    return value if 1 <= value <= _INT32 else None


def decimal(value: float | int) -> float | int | None:
    """FHIR ``decimal``: a finite number (JSON cannot carry NaN/Infinity) or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- narrative ---------------------------------------------------------------------------------------------


def narrative_div(text: str, heading: str | None = None) -> str:
    """An XHTML ``div`` (FHIR narrative) from plain text: clean text, XML-escaped, lines joined by ``<br/>``."""
    body = "<br/>".join(_xml_escape(line, quote=False) for line in clean_text(text).split("\n"))
    if heading:
        body = f"<p><b>{_xml_escape(clean_text(heading), quote=False)}</b></p><p>{body}</p>"
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'


def clean_tree(value: Any) -> Any:
    """Clean every string in a JSON-like tree (for pre-built resources that did not pass the builders)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {k: clean_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_tree(v) for v in value]
    return value
