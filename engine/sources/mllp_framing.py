"""MLLP (Minimal Lower Layer Protocol, HL7 v2 transport) framing without I/O.

A frame is ``<SB> message <EB><CR>`` with ``SB = 0x0B``, ``EB = 0x1C`` and ``CR = 0x0D`` (HL7 v2.5.1
Transport Specification: MLLP, release 2). :class:`MllpDecoder` is fed the bytes read from a socket and
returns, in order, the complete messages (``bytes``) and the byte runs that are not a message
(:class:`Garbage`). Senders' real habits decide the rules, and no byte run is dropped silently:

* ``EB`` ends the message at once; the ``CR`` after it is optional (many senders omit it) and is
  consumed when it arrives, even in a later read. So an end block followed by a start block, or by
  silence, ends a message: the sender gets its answer without having to send anything more;
* a new ``SB`` inside an unfinished frame ends that frame as :class:`Garbage` (``abandoned-frame``:
  a sender that restarted mid-frame), and a new frame starts;
* bytes outside frames form a *junk run*: a run that ends with ``EB`` is a message sent without its
  start block (``no-start-block``); a run ended by ``SB`` or by :meth:`MllpDecoder.flush` (silence,
  connection closed) is ``outside-frame`` garbage. Runs of only whitespace or NUL bytes (line feeds after
  ``<EB><CR>``, keep-alive bytes) are framing noise: counted in ``skipped``, not garbage;
* :meth:`MllpDecoder.flush` returns an unfinished frame as ``unterminated-frame`` garbage;
* a frame longer than ``max_message_bytes`` raises :class:`FrameTooLarge` carrying the first bytes of
  the frame (enough to read MSH for the reject ACK); the caller should answer and close the connection,
  because the rest of that frame cannot be told apart from the next one.

Garbage keeps at most ``keep_bytes`` of its run (``size`` is the full length).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CR", "EB", "SB", "FrameTooLarge", "Garbage", "MllpDecoder", "frame"]

SB = b"\x0b"
EB = b"\x1c"
CR = b"\x0d"
_END = EB + CR
_HEAD_KEEP = 4096  # bytes of an oversized frame kept for reading its MSH segment
_NOISE = b" \t\r\n\x00"

#: Garbage.reason -> one-line description (PHI-free; used in ACKs, dead letters and metrics labels)
GARBAGE_REASONS = {
    "outside-frame": "bytes outside an MLLP frame (no start block 0x0B)",
    "no-start-block": "MLLP framing error: message without its start block (0x0B)",
    "abandoned-frame": "MLLP framing error: a new start block (0x0B) before the end block (0x1C)",
    "unterminated-frame": "MLLP framing error: frame without its end block (0x1C)",
}


class FrameTooLarge(Exception):
    """A frame grew beyond the configured maximum message size."""

    def __init__(self, size: int, limit: int, head: bytes, completed: list[bytes | Garbage] | None = None) -> None:
        super().__init__(f"MLLP frame exceeds {limit} bytes (at least {size} bytes received)")
        self.size = size
        self.limit = limit
        self.head = head  # the first bytes of the oversized frame (for MSH-10 in the reject ACK)
        self.completed = completed or []  # items completed earlier in the same fed chunk


@dataclass(frozen=True, slots=True)
class Garbage:
    """A byte run that is not a well-framed message: ``reason`` is a key of GARBAGE_REASONS."""

    data: bytes  # the first ``keep_bytes`` bytes of the run (control characters included)
    size: int  # full length of the run
    reason: str

    @property
    def description(self) -> str:
        return GARBAGE_REASONS.get(self.reason, self.reason)


def frame(message: bytes) -> bytes:
    """Wrap ``message`` in an MLLP block."""
    return SB + message + _END


class MllpDecoder:
    """Incremental MLLP decoder (sans I/O): ``feed(data)`` returns what ``data`` completed."""

    def __init__(self, max_message_bytes: int, keep_bytes: int = 1024 * 1024) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self.keep_bytes = keep_bytes
        self.skipped = 0  # noise bytes dropped outside frames (whitespace, NUL)
        self._frame = bytearray()  # message bytes of the open frame (without SB)
        self._in_frame = False
        self._junk = bytearray()  # junk run outside frames (capped at keep_bytes)
        self._junk_size = 0
        self._skip_cr = False  # the byte after EB: a CR there belongs to the frame trailer

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame or junk run held (0 between frames)."""
        return len(self._frame) if self._in_frame else self._junk_size

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes | Garbage]:
        """Add ``data`` and return every message / garbage run completed by it, in order.

        Raises :class:`FrameTooLarge` when the current frame exceeds the maximum; items completed
        earlier in the same ``data`` chunk travel in its ``completed`` attribute.
        """
        out: list[bytes | Garbage] = []
        view = memoryview(data)
        pos, n = 0, len(data)
        while pos < n:
            if self._skip_cr:
                self._skip_cr = False
                if data[pos : pos + 1] == CR:
                    pos += 1
                    continue
            if self._in_frame:
                sb = data.find(SB, pos)
                eb = data.find(EB, pos)
                stop = min(i for i in (sb, eb, n) if i >= 0)
                self._frame += view[pos:stop]
                if len(self._frame) > self.max_message_bytes:
                    self._too_large(out)
                if stop == n:
                    break
                if stop == eb:
                    out.append(bytes(self._frame))
                    self._frame.clear()
                    self._in_frame = False
                    self._skip_cr = True
                else:  # SB inside an unfinished frame
                    out.append(self._garbage(bytes(self._frame), len(self._frame), "abandoned-frame"))
                    self._frame.clear()
                pos = stop + 1
                continue
            sb = data.find(SB, pos)
            eb = data.find(EB, pos)
            stop = min(i for i in (sb, eb, n) if i >= 0)
            self._add_junk(view[pos:stop])
            if stop == n:
                break
            if stop == eb:
                item = self._take_junk("no-start-block", always=True)
                if item is not None:
                    out.append(item)
                self._skip_cr = True
            else:
                item = self._take_junk("outside-frame")
                if item is not None:
                    out.append(item)
                self._in_frame = True
            pos = stop + 1
        return out

    def flush(self) -> list[bytes | Garbage]:
        """Silence or end of connection: return the unfinished frame or junk run as garbage."""
        if self._in_frame:
            item = self._garbage(bytes(self._frame), len(self._frame), "unterminated-frame")
            self._frame.clear()
            self._in_frame = False
            return [item]
        junk = self._take_junk("outside-frame")
        return [junk] if junk is not None else []

    # -- helpers ---------------------------------------------------------------------------------
    def _add_junk(self, chunk: memoryview) -> None:
        if not self._junk_size:  # noise before a junk run (a LF after <EB><CR>) is not part of it
            lead = bytes(chunk[:64])
            strip = len(lead) - len(lead.lstrip(_NOISE))
            self.skipped += strip
            chunk = chunk[strip:]
        room = self.keep_bytes - len(self._junk)
        if room > 0:
            self._junk += chunk[:room]
        self._junk_size += len(chunk)

    def _take_junk(self, reason: str, *, always: bool = False) -> Garbage | None:
        data, size = bytes(self._junk), self._junk_size
        self._junk.clear()
        self._junk_size = 0
        if not always and not data.strip(_NOISE) and size == len(data):
            self.skipped += size
            return None
        if always and not data.strip(_NOISE):  # a lone end block: noise too
            self.skipped += size + 1
            return None
        return Garbage(data, size, reason)

    def _garbage(self, data: bytes, size: int, reason: str) -> Garbage:
        return Garbage(data[: self.keep_bytes], size, reason)

    def _too_large(self, completed: list[bytes | Garbage]) -> None:
        size = len(self._frame)
        head = bytes(self._frame[: max(_HEAD_KEEP, min(self.keep_bytes, size))])
        self._frame.clear()
        self._in_frame = False
        raise FrameTooLarge(size, self.max_message_bytes, head, completed)
