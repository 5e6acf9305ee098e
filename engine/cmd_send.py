"""``engine send [--host HOST] --port PORT [--timeout S] FILE...``: send HL7 v2 files over MLLP, one message
per frame, and report each acknowledgement.

A test and trial tool (the README's quick start), not part of the service. Files are split into messages
exactly as ``engine map`` splits them (:func:`pipelines.hl7v2.split_stream`: CR/LF/CRLF segment ends, MLLP-framed
streams, FHS/BHS batches, back-to-back messages, logged ``<SB>``/``<EB>`` dialect, UTF-8 byte-order mark, UTF-16
files), so every message ``engine map`` would convert is sent once, with its own bytes. python-hl7's
``mllp_send --loose`` differs on real files: it splits on the literal ``MSH|^~\\&|``, so a byte-order mark
becomes a message of its own and a message with other encoding characters is glued under a made-up MSH.

Each message is framed ``<SB> message <EB><CR>`` (HL7 v2 MLLP, appendix C of chapter 2) and its
acknowledgement awaited, unless MSH-15 and MSH-16 both ask for none (``NE``; HL7 v2.5.1 2.9.3). One line per
message on stdout: ``FILE#N CONTROL-ID MSA-1 [MSA-3]`` (MSA-3 is the receiver's text, never report content).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
ACCEPTED = {"AA", "CA"}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "send",
        help="send HL7 v2 files to an MLLP listener and print each acknowledgement",
        description="Send the HL7 v2 messages of FILE... to an MLLP listener, one frame per message, split as "
        "`engine map` splits files (any segment ends, MLLP-framed streams, FHS/BHS batches, logs, byte-order "
        "marks). Prints one line per message: FILE#N CONTROL-ID MSA-1 [MSA-3]. DICOM files: use dcmtk's "
        "`storescu -R -aec ENGINE HOST PORT FILE`.",
        epilog="exit codes:\n  0  every message was acknowledged AA or CA (or asked for no acknowledgement)\n"
        "  1  some message got AE/AR/CE/CR, no acknowledgement in time, or a part of a file is not an HL7 "
        "message (the rest was still sent)\n  2  usage error, a file cannot be read, or no connection",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="HL7 v2 files")
    parser.add_argument("--host", default="127.0.0.1", help="listener host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="listener port (2575 in config/local.yaml)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACK (default 30)")
    parser.set_defaults(func=send)


def messages_of(data: bytes) -> list[bytes | None]:
    """The messages of one file as ``engine map`` sees them; None for a part that is not a message."""
    from pipelines.hl7v2 import split_stream

    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 (as engine._dispatch.convert_bytes reads it)
        with contextlib.suppress(UnicodeDecodeError):
            data = data.decode("utf-16").encode("utf-8")
    return [None if chunk.junk else chunk.data for chunk in split_stream(data)]


def _msh(message: bytes) -> list[bytes]:
    """MSH fields: ``fields[n]`` is MSH-n (MSH-1 is the field separator itself)."""
    segment = message.split(CR, 1)[0].split(b"\n", 1)[0]
    if len(segment) < 4:
        return []
    sep = segment[3:4]
    return [b"MSH", sep, *segment[4:].split(sep)]


def _field(fields: list[bytes], n: int) -> str:
    return fields[n].decode("latin-1").strip() if len(fields) > n else ""


def wants_ack(message: bytes) -> bool:
    """False only when MSH-15 and MSH-16 both say NE (never): HL7 v2.5.1 2.9.3 enhanced mode."""
    fields = _msh(message)
    accept, application = _field(fields, 15).upper(), _field(fields, 16).upper()
    return not (accept == "NE" and application in ("", "NE"))


def read_frame(sock: socket.socket) -> bytes:
    """One MLLP frame's payload (``<SB> ... <EB><CR>``); raises TimeoutError / ConnectionError."""
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the acknowledgement")
        buffer += chunk
        end = buffer.find(EB)
        if end >= 0:
            start = buffer.find(SB)
            return buffer[start + 1 if 0 <= start < end else 0 : end]


def unescape(text: str, encoding: str, field_sep: str) -> str:
    """``text`` with the HL7 escape sequences of the separators undone (HL7 v2.5.1 2.7.4: ``\\F\\`` field,
    ``\\S\\`` component, ``\\T\\`` subcomponent, ``\\R\\`` repetition, ``\\E\\`` escape), using the
    encoding characters the acknowledgement declares in MSH-2 (component, repetition, escape, subcomponent).
    Other escapes (formatting, hex) are left as they are: MSA-3 is a short engine-made text."""
    if len(encoding) < 3:
        return text
    esc = encoding[2]
    if esc not in text:
        return text
    pairs = {"F": field_sep, "S": encoding[0], "R": encoding[1], "E": esc}
    if len(encoding) > 3:
        pairs["T"] = encoding[3]
    pattern = re.compile(f"{re.escape(esc)}([{''.join(pairs)}]){re.escape(esc)}")
    return pattern.sub(lambda m: pairs[m.group(1)], text)  # one pass: "\\E\\S\\E\\" is "\\S\\"


def msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-3) of an acknowledgement message; MSA-3 with its separator escapes undone."""
    fields = _msh(ack)
    sep = fields[1] if len(fields) > 1 else b"|"
    encoding = fields[2].decode("latin-1") if len(fields) > 2 else "^~\\&"
    for segment in ack.replace(b"\r\n", CR).replace(b"\n", CR).split(CR):
        if segment.startswith(b"MSA" + sep):
            parts = segment.split(sep)
            code = parts[1].decode("latin-1") if len(parts) > 1 else ""
            text = parts[3].decode("utf-8", "replace") if len(parts) > 3 else ""
            return code, unescape(text, encoding, sep.decode("latin-1"))
    return "", ""


def send(args: argparse.Namespace) -> int:
    batches: list[tuple[Path, list[bytes | None]]] = []
    for path in args.files:
        try:
            batches.append((path, messages_of(path.read_bytes())))
        except OSError as exc:
            print(f"engine send: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    try:
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    except OSError as exc:
        print(f"engine send: cannot connect to {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    failed = 0
    with sock:
        for path, messages in batches:
            for n, message in enumerate(messages, start=1):
                label = f"{path}#{n}"
                if message is None:
                    print(f"{label} - not sent: not an HL7 v2 message (no MSH segment)")
                    failed += 1
                    continue
                control_id = _field(_msh(message), 10) or "-"
                sock.sendall(SB + message + EB + CR)
                if not wants_ack(message):
                    print(f"{label} {control_id} sent (MSH-15/16: no acknowledgement requested)")
                    continue
                try:
                    code, text = msa(read_frame(sock))
                except (TimeoutError, OSError) as exc:
                    print(f"{label} {control_id} no acknowledgement ({exc})")
                    return 1
                print(f"{label} {control_id} {code or '?'}{' ' + text if text else ''}")
                failed += code not in ACCEPTED
    return 1 if failed else 0
