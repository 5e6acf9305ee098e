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
a line feed; every other C0 control but TAB, LF, CR, and DEL and the XML non-characters U+FFFE/U+FFFF are
dropped; CR LF and lone CR become LF. Shapers call these functions
when they write a value (no extra walk of the Bundle); the checks cost one C-level ``isprintable`` for
the common clean value.

Errors: :func:`id_` raises ``ValueError`` (ids are engine-made; a bad one is a bug). The date functions
return ``None`` for a value that cannot be made valid, so the caller leaves the element out rather than
writing an invalid one.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
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

# C0 controls but TAB and LF (CR is normalised to LF), and DEL, as UTF-8 bytes (never inside a multi-byte
# sequence), and the XML non-characters U+FFFE/U+FFFF.
_C0_BYTES = bytes(c for c in range(0x20) if c not in (0x09, 0x0A)) + b"\x7f"
_DROP = re.compile("[\x00-\x08\x0e-\x1f\x7f\ufffe\uffff]")
_BREAK = re.compile("\r\n|[\r\x0b\x0c]")


def clean_text(value: str) -> str:
    """``value`` with the characters FHIR strings and XHTML forbid removed: C0 controls (but TAB, LF), DEL and
    U+FFFE/U+FFFF are dropped first, then form feed, vertical tab, CR LF and lone CR become LF (so CR NUL LF is
    one break). C1 controls (U+0080-U+009F) are left alone: FHIR and XML 1.0 allow them."""
    if value.isprintable():  # C fast path for short values: no control character at all
        return value
    # Multi-line text: one C pass over the UTF-8 bytes finds any C0 control, DEL or CR (~2 ns a byte; a regex
    # search costs five times that); `in` finds U+FFFE/U+FFFF (O(1) on Latin-1 text).
    data = value.encode("utf-8", "surrogatepass")
    if len(data.translate(None, _C0_BYTES)) == len(data) and "\ufffe" not in value and "\uffff" not in value:
        return value
    return _BREAK.sub("\n", _DROP.sub("", value))


#: FHIR ``string``: clean text (see :func:`clean_text`). Callers leave out an element whose value is ''.
string = clean_text
#: FHIR ``markdown``: as string.
markdown = clean_text


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


_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _valid_day(year: str, month: str | None, day: str | None) -> bool:
    if year == "0000":
        return False
    if not (month and day) or day <= "28":
        return True
    y, m, d = int(year), int(month), int(day)
    if m == 2 and d == 29:
        return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    return d <= _DAYS[m]


@lru_cache(maxsize=4096)
def date(value: str) -> str | None:
    """FHIR ``date`` (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, a real day), or None."""
    m = _DATE.fullmatch(value)
    if m is None or not _valid_day(*m.groups()):
        return None
    return value


@lru_cache(maxsize=4096)
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
    """FHIR ``instant``: a full date and a time of day; missing seconds are ``00``, a missing offset is
    ``default_offset``. None when the value has no time of day (a bare date is never made midnight: that would
    be a time the source never sent), no full date, or is invalid."""
    if len(value) <= 10:
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


def narrative_div(text: str, heading: str | None = None, *, clean: bool = False) -> str:
    """An XHTML ``div`` (FHIR narrative) from plain text: clean text (``clean=True``: the caller passes text
    that already went through :func:`clean_text`), XML-escaped, lines joined by ``<br/>``."""
    # Escaping the whole text once equals escaping each line: quote=False touches only & < >, never a line feed.
    body = _xml_escape(text if clean else clean_text(text), quote=False).replace("\n", "<br/>")
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
