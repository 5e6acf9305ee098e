"""HL7 v2 ORU^R01 pipeline: framing, a purpose-built ER7 tokenizer, and the ORU -> report mapping."""

from __future__ import annotations

from pipelines.common.model import Report
from pipelines.context import MappingContext, charset_codec
from pipelines.errors import ParseError
from pipelines.hl7v2.er7 import CHARSETS, clean_delimiters, declared_but_invalid, decode_message, parse_message
from pipelines.hl7v2.fields import component
from pipelines.hl7v2.fields import field as fld
from pipelines.hl7v2.framing import Chunk, split_stream
from pipelines.hl7v2.oru import map_oru

__all__ = ["Chunk", "map_message", "split_stream"]


def map_message(raw: bytes, ctx: MappingContext) -> list[Report]:
    """One message's bytes -> reports. Raises a MappingError subclass with a one-line reason."""
    if len(raw) > ctx.max_message_bytes:
        raise ParseError(f"message is {len(raw)} bytes, over the {ctx.max_message_bytes}-byte limit")
    if b"\x00" in raw:
        # A stray NUL (a C-string terminator after a field) is a control character like any other: dropped.
        # NUL runs or many NULs mean binary data (or UTF-16 without a byte-order mark), which is not a message.
        if b"\x00\x00" in raw or raw.count(b"\x00") > len(raw) // 100 + 1:
            raise ParseError("binary data (NUL bytes) in an HL7 v2 message")
        raw = raw.replace(b"\x00", b"")
    text, codec = decode_message(raw)
    if codec == "latin-1":  # the last-resort reading: only right when MSH-18 declares nothing it contradicts
        problem = declared_but_invalid(raw)
        if problem is not None:
            raise ParseError(problem)
    msg = parse_message(text)
    if codec == "latin-1" and _no_legacy_set_declared(fld(msg.segments[0], 18), msg.delimiters.repetition):
        # No MSH-18 (or ASCII, its default, or a UTF-8 the bytes are not) and not UTF-8: the sender profile may say
        # which legacy set the site sends (e.g. 8859/2 in Central Europe) where the Windows-1252/Latin-1 guess would
        # publish mojibake.
        d = msg.delimiters
        profile = ctx.sender(component(fld(msg.segments[0], 3), d, 1), component(fld(msg.segments[0], 4), d, 1))
        site = charset_codec(profile.charset) if profile.charset else None
        if site and site not in ("ascii", "utf-8", "latin-1", "iso8859-1"):
            try:
                text, codec = raw.removeprefix(b"\xef\xbb\xbf").decode(site), site
            except UnicodeDecodeError as exc:
                raise ParseError(
                    f"the sender profile's charset {profile.charset} ({site}) does not fit the message bytes "
                    f"(byte offset {exc.start})"
                ) from None
            msg = parse_message(text)
    msg.charset = codec
    if len(raw.translate(None, _CONTROL_BYTES)) == len(raw):
        # No control character anywhere (the usual message): decoded leaves are clean without a check.
        msg.delimiters = clean_delimiters(msg.delimiters)
    return map_oru(msg, ctx)


# C0 controls but TAB, LF, CR, and DEL: bytes that decode to control characters in every MSH-18 charset.
_CONTROL_BYTES = bytes(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)) + b"\x7f"


def _no_legacy_set_declared(msh18: str, repetition: str) -> bool:
    """MSH-18 empty, ``ASCII`` (HL7 v2.5.1 2.15.9.18: the default when empty) or UTF-8: a message whose bytes
    are neither (read as Latin-1) was written in a legacy 8-bit set the declaration does not name."""
    value = msh18.split(repetition, 1)[0].strip().upper()
    return not value or CHARSETS.get(value) in ("ascii", "utf-8")
