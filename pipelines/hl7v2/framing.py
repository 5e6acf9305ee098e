"""Split an HL7 v2 byte stream into messages, keeping each message's original bytes.

Handles what real feeds contain (HL7 v2.x chapter 2 encoding rules, MLLP appendix C): CR, LF or CRLF
segment ends; MLLP-framed streams (0x0B ... 0x1C 0x0D); FHS/BHS ... BTS/FTS batches (the envelope segments are
dropped); messages back to back; a UTF-8 byte-order mark. Anything that is not whitespace and does not
belong to a message is returned as an unparseable chunk so that it is rejected with a reason rather than
silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Chunk", "split_stream"]

_BOM = b"\xef\xbb\xbf"
_VT, _FS = b"\x0b", b"\x1c"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One message candidate: ``data`` starts with ``MSH`` unless ``junk`` is set. ``original`` holds the
    bytes as they were in the input when ``data`` had to be normalised (logged-MLLP dialect)."""

    data: bytes
    junk: bool = False
    original: bytes | None = None

    @property
    def raw(self) -> bytes:
        return self.original if self.original is not None else self.data


def split_stream(data: bytes) -> list[Chunk]:
    """Return the messages (and non-message junk) of ``data`` in order."""
    if b"<" in data and _LOG_SB in data:  # one memchr first: most streams hold no "<" at all
        return _logged_frames(data)
    if _VT in data and _FS in data:
        chunks: list[Chunk] = []
        for frame in _mllp_frames(data):
            chunks.extend(_split_plain(frame))
        return chunks
    return _split_plain(data)


_LOG_SB, _LOG_EB = b"<SB>", b"<EB>"
_LOG_CR = re.compile(rb"<(?:R|CR)>[ \t]*(?:\r\n|\n|\r)?")


def _logged_frames(data: bytes) -> list[Chunk]:
    """Interface-engine logs write MLLP control characters as text: ``<SB>`` (0x0B), ``<EB>`` (0x1C) and
    ``<R>``/``<CR>`` (0x0D, the segment terminator), with log header lines between frames. Each frame is one
    message; text outside frames is log noise, not a message."""
    chunks: list[Chunk] = []
    for part in data.split(_LOG_SB)[1:]:
        frame = part.split(_LOG_EB, 1)[0]
        normalised = _LOG_CR.sub(b"\r", frame).strip(b" \t\r\n")
        if not normalised:
            chunks.append(Chunk(frame, junk=True))
            continue
        for chunk in _split_plain(normalised + b"\r"):
            chunks.append(Chunk(chunk.data, chunk.junk, original=frame))
    return chunks


def _mllp_frames(data: bytes) -> list[bytes]:
    frames: list[bytes] = []
    pos = 0
    while True:
        start = data.find(_VT, pos)
        if start < 0:
            tail = data[pos:]
            if tail.strip(b" \t\r\n" + _FS):
                frames.append(tail)  # bytes after the last frame: reported as junk by _split_plain
            return frames
        if data[pos:start].strip(b" \t\r\n" + _FS):
            frames.append(data[pos:start])
        end = data.find(_FS, start + 1)
        if end < 0:
            frames.append(data[start + 1 :])  # unterminated frame: keep what we have (truncated message)
            return frames
        frames.append(data[start + 1 : end])
        pos = end + 1


_SEGMENT_STARTS = (b"MSH", b"FHS", b"BHS", b"BTS", b"FTS")


_NAMES = frozenset(_SEGMENT_STARTS)
_LF_TO_CR = bytes.maketrans(b"\n", b"\r")


def _starts(data: bytes) -> list[tuple[int, bytes]]:
    """Offsets of MSH/FHS/BHS/BTS/FTS at the start of the data or of a line (the hot path: one C split into
    lines, then a look at each line's first bytes, instead of one scan of the data per segment name)."""
    found: list[tuple[int, bytes]] = []
    pos = 0
    for line in data.translate(_LF_TO_CR).split(b"\r"):
        name = line[:3]
        if name in _NAMES:
            nxt = line[3:4]  # the byte after the name ('' when the line ends there: no segment)
            if nxt and not nxt.isalnum():
                found.append((pos, name))
        pos += len(line) + 1
    if data.startswith(_BOM):
        for name in _SEGMENT_STARTS:
            if data.startswith(name, 3):
                found.append((0, name))
    found.sort()
    return found


def _split_plain(data: bytes) -> list[Chunk]:
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    starts = _starts(data)
    chunks: list[Chunk] = []
    head = data[: starts[0][0]] if starts else data
    if head.strip():
        chunks.append(Chunk(head, junk=True))
    for i, (pos, seg) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        if seg != b"MSH":
            continue  # batch envelope segment (FHS/BHS/BTS/FTS): not a message
        body = data[pos:end]
        if body.startswith(_BOM):
            body = body[len(_BOM) :]
        chunks.append(Chunk(body))
    return chunks
