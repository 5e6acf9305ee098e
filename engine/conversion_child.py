"""The process behind :class:`engine.conversion_channel.ConversionChannel`: ``python -m engine.conversion_child``.

Reads frames from stdin (8-byte big-endian length, then a pickle): first ``(MappingContext, model)``, then
requests ``[payload bytes, ...]``; writes one answer frame per request to stdout, in order:
``("ok", [Conversion, ...])`` or ``("error", exception)`` when the converter raised (the process serves on).
Exits 0 when stdin closes (the service stopped or died). Anything printed goes to stderr: stdout is the
channel. SIGINT is ignored (Ctrl-C reaches the whole process group; the service stops this process).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import BinaryIO

from engine.backfill.pool import _init, convert_batch
from engine.conversion_channel import HEADER

__all__ = ["main", "serve"]


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) < size:
        return None  # end of input (a partial frame only when the writer died mid-frame)
    return data


def _next_frame(stream: BinaryIO) -> bytes | None:
    """The next frame's pickle, or None at the end of input."""
    head = _read(stream, HEADER.size)
    return None if head is None else _read(stream, HEADER.unpack(head)[0])


def _write(stream: BinaryIO, value: object) -> None:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Serve requests from ``inp`` until it ends; returns the exit status (0)."""
    body = _next_frame(inp)
    if body is None:
        return 0
    context, model = pickle.loads(body)
    _init(context, model)
    while True:
        body = _next_frame(inp)
        if body is None:
            return 0
        payloads = pickle.loads(body)
        try:
            answer: tuple[str, object] = ("ok", convert_batch(payloads))
        except Exception as exc:  # a converter bug: the caller logs it; this process serves on
            try:
                pickle.dumps(exc)
                answer = ("error", exc)
            except Exception:
                answer = ("error", RuntimeError(f"{exc.__class__.__name__}: {exc}"))
        _write(out, answer)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray output must not corrupt the channel
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
