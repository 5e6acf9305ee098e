"""MLLP (Minimal Lower Layer Protocol, HL7 v2 transport) framing without I/O.

A frame is ``<SB> message <EB><CR>`` with ``SB = 0x0B``, ``EB = 0x1C`` and ``CR = 0x0D``.
:class:`MllpDecoder` is fed the bytes read from a socket and returns the complete messages; it keeps
no more than ``max_message_bytes`` of an unfinished frame:

* bytes between frames (junk before ``SB``, stray line feeds) are dropped and counted in ``skipped``;
* a new ``SB`` inside an unfinished frame abandons the unfinished part (a sender that restarted
  mid-frame) and counts it in ``skipped``;
* a frame longer than ``max_message_bytes`` raises :class:`FrameTooLarge` carrying the first bytes of
  the frame (enough to read MSH for the reject ACK); the caller should answer and close the connection,
  because the rest of that frame cannot be told apart from the next one.
"""

from __future__ import annotations

__all__ = ["CR", "EB", "SB", "FrameTooLarge", "MllpDecoder", "frame"]

SB = b"\x0b"
EB = b"\x1c"
CR = b"\x0d"
_END = EB + CR
_HEAD_KEEP = 4096  # bytes of an oversized frame kept for reading its MSH segment


class FrameTooLarge(Exception):
    """A frame grew beyond the configured maximum message size."""

    def __init__(self, size: int, limit: int, head: bytes, completed: list[bytes] | None = None) -> None:
        super().__init__(f"MLLP frame exceeds {limit} bytes (at least {size} bytes received)")
        self.size = size
        self.limit = limit
        self.head = head  # the first bytes of the oversized frame (for MSH-10 in the reject ACK)
        self.completed = completed or []  # messages completed earlier in the same fed chunk


def frame(message: bytes) -> bytes:
    """Wrap ``message`` in an MLLP block."""
    return SB + message + _END


class MllpDecoder:
    """Incremental MLLP decoder (sans I/O): ``feed(data)`` returns the messages completed by ``data``."""

    def __init__(self, max_message_bytes: int) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self.skipped = 0  # junk bytes dropped outside frames (and abandoned partial frames)
        self._buf = bytearray()
        self._in_frame = False
        self._scan = 0  # offset in _buf from which to look for the end block

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held in the buffer (0 between frames)."""
        return len(self._buf) if self._in_frame else 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every message completed by it, in order.

        Raises :class:`FrameTooLarge` when the current frame exceeds the maximum; messages completed
        earlier in the same ``data`` chunk travel in its ``completed`` attribute.
        """
        out: list[bytes] = []
        self._buf += data
        while self._buf:
            if not self._in_frame:
                start = self._buf.find(SB)
                if start < 0:
                    self.skipped += len(self._buf)
                    self._buf.clear()
                    break
                self.skipped += start
                del self._buf[: start + 1]
                self._in_frame = True
                self._scan = 0
            # inside a frame: _buf holds the message bytes received so far (without SB)
            restart = self._buf.find(SB, self._scan)
            end = self._buf.find(_END, self._scan)
            if restart >= 0 and (end < 0 or restart < end):
                # a new frame starts before this one ended: drop the unfinished part
                self.skipped += restart
                del self._buf[:restart]
                self._in_frame = False
                continue
            if end < 0:
                if len(self._buf) > self.max_message_bytes:
                    self._raise_too_large(out)
                # keep the last byte: it may be EB waiting for its CR
                self._scan = max(0, len(self._buf) - 1)
                break
            if end > self.max_message_bytes:
                self._raise_too_large(out)
            out.append(bytes(self._buf[:end]))
            del self._buf[: end + len(_END)]
            self._in_frame = False
        return out

    def _raise_too_large(self, completed: list[bytes]) -> None:
        size = len(self._buf)
        head = bytes(self._buf[:_HEAD_KEEP])
        self._buf.clear()
        self._in_frame = False
        raise FrameTooLarge(size, self.max_message_bytes, head, completed)
