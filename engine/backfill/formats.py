"""Streaming readers: archive files in, one frame (one message candidate) at a time out, bounded memory.

A *frame* is the original bytes of one message as they sit in the archive (markers included); the converter
(:func:`engine._dispatch.convert_bytes`, via :func:`pipelines.hl7v2.split_stream`) decodes it. Readers never
read a whole archive: they scan fixed-size blocks and keep at most one frame plus one block in memory. A
frame longer than ``limit`` bytes is emitted as it is (the converter rejects it as oversized), so a file
without any boundary cannot exhaust memory either.

**Log formats are pluggable.** A :class:`LogFormat` is a small object with

* ``name``: a short id (shown in reports),
* ``detect(head) -> bool``: does the first block of a file look like this layout,
* ``frames(stream, limit) -> Iterator[Frame]``: the frames of a binary stream, in order.

:data:`FORMATS` lists the built-in layouts in detection order; pass your own list to :func:`frames_of`
to add one (one implementation per layout):

* :class:`LoggedMllp`: listener logs that write MLLP control characters as text (``<SB>`` = 0x0B,
  ``<EB>`` = 0x1C, ``<R>``/``<CR>`` = segment end) between log lines (the WashU scout ``raw-logs``
  layout). Text outside frames is log noise. A frame whose ``<EB>`` is missing ends at the next ``<SB>``
  (a truncated message: converted if complete enough, else rejected with the reason).
* :class:`MllpCapture`: MLLP-framed captures (0x0B ... 0x1C 0x0D, HL7 v2 appendix C); bytes between
  frames that are not whitespace become a frame of their own (rejected as junk, never silently dropped).
* :class:`Er7Stream`: plain ER7: single messages, messages back to back, FHS/BHS batches (the envelope
  segments stay attached to the next message and are dropped by the converter), CR/LF/CRLF segment ends.

DICOM files (Part 10, raw datasets, DICOM JSON) are detected by content first and are one frame each;
UTF-16 text files are read whole (the converter re-encodes them).

**Files that are not messages.** A file that is not DICOM, holds no HL7 v2 message start anywhere
(:data:`MESSAGE_START`: ``MSH``/``FHS``/``BHS`` at the start of the file or of a line, or right after an
MLLP or ``<SB>`` marker, followed by a field separator and the encoding characters) and is not a listener
log (no ``<SB>`` marker) yields one frame with ``skip`` set to :data:`NOT_A_MESSAGE_FILE`: one outcome for
the whole file (a README, a binary blob), never one rejected "message" per run of junk. A listener log's
``<SB>`` frames are what a sender transmitted, so they stay message candidates even when none holds a
message (an empty or junk transmission is rejected with its reason). The scan stops at the first start or
marker found (usually in the first block).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from engine._dispatch import is_dicom

__all__ = [
    "BLOCK",
    "FORMATS",
    "MESSAGE_START",
    "NOT_A_MESSAGE_FILE",
    "Er7Stream",
    "Frame",
    "InputFile",
    "LogFormat",
    "LoggedMllp",
    "MllpCapture",
    "detect_format",
    "frames_of",
    "iter_files",
    "message_key",
]

BLOCK = 1 << 20  # bytes read per step
_WS = b" \t\r\n"


NOT_A_MESSAGE_FILE = "not an HL7 v2 or DICOM file (no MSH/FHS/BHS message start, no DICOM header)"

#: An HL7 v2 message (or batch) start: segment id at the start of the file or a line, or after an MLLP /
#: ``<SB>`` marker, then the field separator, the encoding characters and the separator again or the end of
#: the line (HL7 v2.5.1 section 2.5.4: MSH-1, MSH-2). As lenient as the mapper's message split: MSH-2 may
#: declare fewer than four characters (the others default) or more (v2.7 truncation, sender extras), and a
#: wrapped MSH line may end after MSH-2, the field separator may be a TAB; a report the mapper converts is never
#: skipped as a non-message file.
MESSAGE_START = re.compile(
    rb"(?:\A|[\r\n\x0b>])(?:\xef\xbb\xbf)?(?:MSH|FHS|BHS)([^A-Za-z0-9\s]|\t)[^A-Za-z0-9\s]{0,8}?(?:\1|[\r\n]|\Z)"
)


@dataclass(slots=True)
class Frame:
    """One frame. Not ``frozen``: a frozen dataclass costs 1.5 us per instance (``object.__setattr__`` per
    field), this one 0.6, and one is built per message on the reading process's hot path."""

    index: int  # 1-based position of the frame in its file (the checkpoint unit)
    raw: bytes  # the original bytes (markers included): converted, and dead-lettered verbatim
    skip: str | None = None  # the whole file is not a message file: this reason, one outcome


@dataclass(frozen=True, slots=True)
class InputFile:
    path: Path
    size: int
    mtime_ns: int


@runtime_checkable
class LogFormat(Protocol):
    name: str

    def detect(self, head: bytes) -> bool: ...

    def frames(self, stream: BinaryIO, limit: int) -> Iterator[bytes]: ...


def _blocks(stream: BinaryIO) -> Iterator[bytes]:
    while True:
        block = stream.read(BLOCK)
        if not block:
            return
        yield block


class _Delimited:
    """Frames between a start marker and an end marker; a new start before the end closes a truncated frame."""

    name = "delimited"
    start = b""
    end = b""
    trailer: tuple[bytes, ...] = ()  # optional bytes after ``end`` that still belong to the frame
    noise_is_junk = False  # text outside frames is a frame of its own (rejected) instead of log noise

    def detect(self, head: bytes) -> bool:
        return self.start in head

    def frames(self, stream: BinaryIO, limit: int) -> Iterator[bytes]:
        buf = b""
        for block in _blocks(stream):
            buf += block
            buf = yield from self._drain(buf, limit, final=False)
        yield from self._drain(buf, limit, final=True)

    def _drain(self, buf: bytes, limit: int, *, final: bool) -> Generator[bytes, None, bytes]:
        """Yield the complete frames of ``buf``; return the unconsumed tail (empty when ``final``)."""
        pos = 0
        start, end = self.start, self.end
        longest_trailer = max((len(t) for t in self.trailer), default=0)
        while True:
            s = buf.find(start, pos)
            if s < 0:
                keep = len(buf) if final else max(pos, len(buf) - len(start) + 1)  # a split start marker
                if self.noise_is_junk and not final and len(buf) - pos <= limit:
                    return buf[pos:]  # junk between frames is reported whole, never split at a block edge
                yield from self._noise(buf[pos:keep])
                return buf[keep:]
            yield from self._noise(buf[pos:s])
            e = buf.find(end, s + len(start))
            nxt = buf.find(start, s + len(start))
            if e >= 0 and (nxt < 0 or e < nxt):
                stop = e + len(end)
                if not final and len(buf) - stop < longest_trailer:
                    return buf[s:]  # wait for the bytes that may hold the trailer
                stop += next((len(t) for t in self.trailer if buf.startswith(t, stop)), 0)
                yield buf[s:stop]
                pos = stop
            elif nxt >= 0:  # truncated: no end marker before the next frame
                yield self.truncated(buf[s:nxt])
                pos = nxt
            elif final or len(buf) - s > limit:
                yield self.truncated(buf[s:]) if final else buf[s:]
                return b""
            else:
                return buf[s:]

    def truncated(self, frame: bytes) -> bytes:
        """A frame cut off by the next start marker: drop the trailing text that is not message (log lines)."""
        return frame

    def _noise(self, text: bytes) -> Iterator[bytes]:
        if self.noise_is_junk and text.strip(_WS + self.end):
            yield text


class LoggedMllp(_Delimited):
    """``<SB>`` ... ``<EB>`` text markers inside a listener log (WashU scout raw-logs layout)."""

    name = "logged-mllp"
    start = b"<SB>"
    end = b"<EB>"
    trailer = (b"<R>", b"<CR>")

    def truncated(self, frame: bytes) -> bytes:
        """Up to the last segment end (``<R>``/``<CR>`` and its line break); the log line after it is noise."""
        ends = [frame.rfind(t) + len(t) for t in (b"<R>", b"<CR>") if t in frame]
        if not ends:
            return frame
        cut = max(ends)
        if frame.startswith(b"\r\n", cut):
            return frame[: cut + 2]
        return frame[: cut + 1] if frame[cut : cut + 1] in (b"\r", b"\n") else frame[:cut]


class MllpCapture(_Delimited):
    """Binary MLLP framing (0x0B ... 0x1C 0x0D): raw TCP captures and MLLP dump files."""

    name = "mllp"
    start = b"\x0b"
    end = b"\x1c"
    trailer = (b"\r",)
    noise_is_junk = True

    def detect(self, head: bytes) -> bool:
        return b"\x0b" in head and b"\x1c" in head


def _next_msh(buf: bytes, start: int) -> int:
    """Offset of the next ``MSH`` that starts a line (after CR or LF) and is followed by a field separator
    (not alphanumeric, not a line end), at or after ``start``; -1 when there is none. A ``bytes.find`` loop:
    the scan is on the reading process's hot path."""
    pos = buf.find(b"MSH", max(start, 1))
    while pos >= 0:
        if buf[pos - 1] in (13, 10):
            nxt = buf[pos + 3 : pos + 4]
            if nxt and not nxt.isalnum() and nxt not in (b"\r", b"\n"):
                return pos
            if not nxt:
                return -1  # the separator is in the next block
        pos = buf.find(b"MSH", pos + 3)
    return -1


class Er7Stream:
    """Plain ER7: a frame per MSH at the start of a line (batch envelope segments ride along)."""

    name = "er7"

    def detect(self, head: bytes) -> bool:
        return True

    def frames(self, stream: BinaryIO, limit: int) -> Iterator[bytes]:
        buf = b""
        for block in _blocks(stream):
            buf += block
            pos = look = 0
            while True:
                cut = _next_msh(buf, look + 1)
                if cut < 0:
                    break
                look = cut
                if not buf.startswith(b"MSH", pos):  # the usual frame starts right at its MSH: nothing to check
                    head = buf[pos:cut].lstrip(_WS).removeprefix(b"\xef\xbb\xbf")
                    if head.startswith((b"FHS", b"BHS")) and b"\rMSH" not in head and b"\nMSH" not in head:
                        continue  # batch header segments stay with the first message of the batch
                    if not head:
                        pos = cut
                        continue
                yield buf[pos:cut]
                pos = cut
            buf = buf[pos:]
            while len(buf) > limit:  # no boundary in sight: emit (the converter rejects it as oversized)
                yield buf[:limit]
                buf = buf[limit:]
        if buf.strip(_WS):
            yield buf


FORMATS: tuple[LogFormat, ...] = (LoggedMllp(), MllpCapture(), Er7Stream())


def detect_format(head: bytes, formats: Sequence[LogFormat] = FORMATS) -> LogFormat:
    for fmt in formats:
        if fmt.detect(head):
            return fmt
    return Er7Stream()


def frames_of(path: Path, limit: int, formats: Sequence[LogFormat] = FORMATS) -> Iterator[Frame]:
    """The frames of one file, in order (see the module docstring)."""
    with open(path, "rb") as stream:
        head = stream.read(64 * 1024)
        if is_dicom(head):
            rest = stream.read(limit + 1 - len(head))
            yield Frame(1, head + rest)
            return
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 text
            data = head + stream.read(limit + 1 - len(head))
            text = data.decode("utf-16", errors="replace").encode("utf-8", errors="replace")
            yield Frame(1, data) if MESSAGE_START.search(text) else Frame(1, b"", NOT_A_MESSAGE_FILE)
            return
        if head.strip(_WS) and not _has_start(head, stream):
            yield Frame(1, b"", NOT_A_MESSAGE_FILE)
            return
        stream.seek(0)
        fmt = detect_format(head, formats)
        for n, raw in enumerate(fmt.frames(stream, limit), start=1):
            yield Frame(n, raw)


def _has_start(head: bytes, stream: BinaryIO) -> bool:
    """Is there a :data:`MESSAGE_START` or a ``<SB>`` log marker in ``head`` or the rest of ``stream`` (read
    block by block, with an overlap)?"""
    tail = b""
    for block in itertools.chain((head,), _blocks(stream)):
        buf = tail + block
        if MESSAGE_START.search(buf) or b"<SB>" in buf:
            return True
        tail = buf[-32:]  # longer than any MESSAGE_START match
    return False


_LOG_CR = re.compile(rb"<(?:R|CR)>[ \t]*(?:\r\n|\n|\r)?|\r\n|\n")


def message_key(raw: bytes) -> bytes:
    """Digest identifying an exact duplicate: the message bytes with framing (``<SB>``/``<EB>``, MLLP
    characters, surrounding whitespace) and segment-terminator spelling normalised away. Two frames with the
    same key carry the same control id and the same content."""
    body = raw.strip(_WS + b"\x0b\x1c")
    if not body.startswith((b"<SB>", b"MSH", b"FHS", b"BHS")):  # DICOM, junk: the bytes as they are
        return hashlib.blake2b(raw, digest_size=16).digest()
    if body.startswith(b"<SB>"):
        body = body[4:]
        cut = body.rfind(b"<EB>")
        if cut >= 0:
            body = body[:cut]
    # plain CR-terminated ER7 needs no rewriting; ``<`` first: one memchr instead of two substring scans
    if b"\n" in body or (b"<" in body and (b"<R>" in body or b"<CR>" in body)):
        body = _LOG_CR.sub(b"\r", body)
    body = body.strip(_WS)
    return hashlib.blake2b(body, digest_size=16).digest()


def iter_files(paths: Sequence[Path]) -> Iterator[InputFile]:
    """Files in the given order; directories walked recursively in sorted order (hidden entries skipped).
    Only regular files (and links to them) are read: a named pipe, socket or device would block or never end."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and (Path(root) / name).is_file():
                        yield _input(Path(root) / name)
        elif path.is_file() or not path.exists():
            yield _input(path)  # a missing file is reported by the reader


def _input(path: Path) -> InputFile:
    try:
        st = path.stat()
    except OSError:
        return InputFile(path, 0, 0)
    return InputFile(path, st.st_size, st.st_mtime_ns)
