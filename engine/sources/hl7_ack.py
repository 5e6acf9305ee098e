"""Read the MSH segment of an HL7 v2 message and build its acknowledgement (ACK).

Only the MSH segment is decoded, with the charset named in MSH-18 (HL7 table 0211); the message bytes
themselves are never re-encoded. The ACK is a plain HL7 v2 ``ACK`` message with the standard encoding
characters ``^~\\&``:

* ``MSH``: sender and receiver swapped (ACK MSH-3/4 = original MSH-5/6 and vice versa), MSH-7 now,
  MSH-9 ``ACK^<trigger>^ACK``, MSH-10 a new control id, MSH-11 and MSH-12 echoed, MSH-18 echoed;
* ``MSA``: MSA-1 the acknowledgement code (``AA``/``AE``/``AR`` original mode, ``CA``/``CE``/``CR``
  enhanced mode accept acknowledgements), MSA-2 the original MSH-10, MSA-3 the reason on errors;
* ``ERR`` on errors: ERR-3/ERR-4/ERR-8 from v2.5 on, ERR-1 (ELD) before v2.5.

Reasons are fixed engine texts, never message content (no PHI).
"""

from __future__ import annotations

import codecs
import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime

from pipelines.hl7v2.er7 import CHARSETS

__all__ = [
    "ERROR_APPLICATION_INTERNAL",
    "ERROR_SEGMENT_SEQUENCE",
    "ERROR_UNSUPPORTED_MESSAGE_TYPE",
    "HL7_CHARSETS",
    "MshInfo",
    "Verdict",
    "ack_control_id",
    "acknowledgements",
    "build_ack",
    "build_batch_ack",
    "is_batch",
    "is_enhanced",
    "python_codec",
    "read_msh",
]

# HL7 table 0357 (message error condition codes) used in ERR
ERROR_SEGMENT_SEQUENCE = ("100", "Segment sequence error")
ERROR_APPLICATION_INTERNAL = ("207", "Application internal error")
ERROR_UNSUPPORTED_MESSAGE_TYPE = ("200", "Unsupported message type")

# HL7 table 0211 (alternate character sets, MSH-18) -> Python codec: one table, shared with the tokenizer.
HL7_CHARSETS = CHARSETS
_STANDARD_ENCODING = "^~\\&"
_BOM = b"\xef\xbb\xbf"


def python_codec(charset: str) -> str:
    """Python codec for an MSH-18 value; ASCII-compatible Latin-1 for empty or unknown values.

    Latin-1 decodes every byte, so an unknown charset still lets us read the (ASCII) MSH fields.
    """
    name = HL7_CHARSETS.get(charset.strip().upper())
    if name is None:
        try:
            name = codecs.lookup(charset.strip()).name if charset.strip() else "iso8859-1"
        except LookupError:
            name = "iso8859-1"
    # MLLP framing and the field separators are single bytes: multi-byte-unit encodings cannot be read
    return "iso8859-1" if name.startswith(("utf-16", "utf-32")) else name


@dataclass(frozen=True, slots=True)
class MshInfo:
    """The MSH fields the transport needs (raw field text, original encoding characters)."""

    field_separator: str
    encoding_characters: str
    sending_application: str  # MSH-3
    sending_facility: str  # MSH-4
    receiving_application: str  # MSH-5
    receiving_facility: str  # MSH-6
    message_type: str  # MSH-9 as sent, e.g. "ORU^R01^ORU_R01"
    message_code: str  # MSH-9.1
    trigger_event: str  # MSH-9.2
    control_id: str  # MSH-10
    processing_id: str  # MSH-11
    version: str  # MSH-12.1
    accept_ack_type: str  # MSH-15 (enhanced mode: AL, NE, ER, SU)
    application_ack_type: str  # MSH-16
    charset: str  # MSH-18, first repetition as declared ("" when absent)
    codec: str  # Python codec used to read MSH (and to encode the ACK)


def _msh_segment(message: bytes) -> bytes | None:
    start = 0
    if message.startswith(_BOM):
        start = len(_BOM)
    while start < len(message) and message[start] in b"\r\n \t":
        start += 1
    if message[start : start + 3] != b"MSH" or len(message) < start + 8:
        return None
    end = len(message)
    for sep in (b"\r", b"\n"):
        i = message.find(sep, start)
        if 0 <= i < end:
            end = i
    return message[start:end]


def read_msh(message: bytes) -> MshInfo | None:
    """Parse the MSH segment of ``message``; ``None`` when it does not start with a usable MSH.

    The result is memoised per MSH segment (a few recent ones): the MLLP listener, the message index and the
    ACK read the same header of one message (``MshInfo`` is immutable)."""
    segment = _msh_segment(message)
    if segment is None:
        return None
    return _parse_msh(segment)


@functools.lru_cache(maxsize=64)
def _parse_msh(segment: bytes) -> MshInfo | None:
    sep = chr(segment[3])
    if sep.isalnum() or sep in "\r\n ":  # a TAB field separator is allowed, as the mapper allows it
        return None
    raw_fields = segment.decode("iso8859-1").split(sep)
    enc = raw_fields[1] if len(raw_fields) > 1 else ""
    # MSH-2 as the mapper reads it (pipelines.hl7v2.er7): one to four delimiters count (a fifth, the v2.7
    # truncation character, and anything after it is ignored), so a message `engine map` converts is never
    # refused here as "not an HL7 v2 message".
    if not enc or any(c.isalnum() or c.isspace() for c in enc[:4]):
        return None
    charset = raw_fields[17] if len(raw_fields) > 17 else ""
    charset = charset.split(enc[1])[0].strip() if len(enc) > 1 else charset.strip()
    codec = python_codec(charset)
    try:
        text = segment.decode(codec, errors="replace")
    except LookupError:  # pragma: no cover - python_codec only returns known codecs
        text = segment.decode("iso8859-1")
    fields = text.split(sep)
    fields += [""] * (19 - len(fields))

    def comp(value: str, index: int) -> str:
        parts = value.split(enc[0])
        return parts[index] if index < len(parts) else ""

    return MshInfo(
        field_separator=sep,
        encoding_characters=enc,
        sending_application=fields[2],
        sending_facility=fields[3],
        receiving_application=fields[4],
        receiving_facility=fields[5],
        message_type=fields[8],
        message_code=comp(fields[8], 0),
        trigger_event=comp(fields[8], 1),
        control_id=fields[9],
        processing_id=fields[10],
        version=comp(fields[11], 0),
        accept_ack_type=fields[14].strip().upper(),
        application_ack_type=fields[15].strip().upper(),
        charset=charset,
        codec=codec,
    )


@functools.lru_cache(maxsize=16)
def _timestamp(now: datetime) -> str:
    """MSH-7 (DTM, seconds and UTC offset); memoised: a busy listener acknowledges many messages per second."""
    return now.strftime("%Y%m%d%H%M%S") + (now.strftime("%z") if now.tzinfo else "")


@functools.lru_cache(maxsize=64)
def _version_tuple(version: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in version.split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def _escape(text: str) -> str:
    """HL7 escape sequences for the standard encoding characters (for engine-made text)."""
    out = text.replace("\\", "\\E\\")
    for ch, esc in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(ch, esc)
    return out.replace("\r", " ").replace("\n", " ")


def _to_standard(msh: MshInfo, value: str) -> str:
    """Translate a field copied from the original message to the ACK's standard encoding characters."""
    enc = msh.encoding_characters[:4]
    if msh.field_separator == "|" and enc == _STANDARD_ENCODING[: len(enc)]:
        return value
    table = {ord(msh.field_separator): "|"}
    for i, ch in enumerate(enc):
        table[ord(ch)] = _STANDARD_ENCODING[i]
    return value.translate(table)


def ack_control_id(original_control_id: str, received_ns: int, code: str) -> str:
    """MSH-10 of an ACK: 20 hex characters derived from the original id, the receive time and the code."""
    seed = f"{original_control_id}|{received_ns}|{code}".encode()
    return hashlib.blake2b(seed, digest_size=10).hexdigest().upper()


def build_ack(
    msh: MshInfo | None,
    code: str,
    *,
    now: datetime,
    control_id: str,
    text: str = "",
    error: tuple[str, str] = ERROR_APPLICATION_INTERNAL,
) -> bytes:
    """Encode an ACK for ``msh`` (``None``: the input had no readable MSH) with MSA-1 ``code``.

    ``text`` (a PHI-free engine reason) goes to MSA-3 and ERR for error codes; the ACK is encoded with
    the charset of the original message (MSH-18 echoed).
    """
    version = (msh.version if msh else "") or "2.5"
    trigger = msh.trigger_event if msh else ""
    vt = _version_tuple(version)
    message_type = f"ACK^{trigger}^ACK" if vt >= (2, 3, 1) or not vt else f"ACK^{trigger}"
    if msh is not None:
        swap = [_to_standard(msh, v) for v in (msh.receiving_application, msh.receiving_facility)]
        swap += [_to_standard(msh, v) for v in (msh.sending_application, msh.sending_facility)]
        processing_id = _to_standard(msh, msh.processing_id) or "P"
        original_id = _to_standard(msh, msh.control_id)
        charset = msh.charset
        codec = msh.codec
    else:
        swap = ["", "", "", ""]
        processing_id, original_id, charset, codec = "P", "", "", "ascii"
    timestamp = _timestamp(now)
    msh_fields = ["MSH", _STANDARD_ENCODING, *swap, timestamp, "", message_type, control_id, processing_id, version]
    if charset:
        msh_fields += ["", "", "", "", "", _escape(charset)]
    segments = ["|".join(msh_fields)]
    is_error = code not in ("AA", "CA")
    msa = ["MSA", code, original_id]
    if is_error and text:
        msa.append(_escape(text))
    segments.append("|".join(msa))
    if is_error:
        err_code, err_name = error
        if not vt or vt >= (2, 5):
            segments.append(f"ERR|||{err_code}^{err_name}^HL70357|E||||{_escape(text)}")
        else:
            segments.append(f"ERR|^^^{err_code}&{err_name}&HL70357")
    body = "\r".join(segments) + "\r"
    return body.encode(codec if codec else "ascii", errors="replace")


# -- acknowledgement rules (HL7 v2.5.1 2.9.2 original mode, 2.9.3 enhanced mode) ----------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happened at one stage: ``kind`` ``A`` (accepted / converted), ``E`` (error, e.g. storage failed,
    conversion failed) or ``R`` (rejected, e.g. not something we take); ``text`` a PHI-free reason."""

    kind: str
    text: str = ""
    error: tuple[str, str] = ERROR_APPLICATION_INTERNAL


def is_enhanced(msh: MshInfo | None) -> bool:
    """Enhanced mode when MSH-15 or MSH-16 is valued (2.9.3); both empty: original mode (2.9.2)."""
    return msh is not None and bool(msh.accept_ack_type or msh.application_ack_type)


def _wanted(condition: str, kind: str) -> bool:
    """HL7 table 0155: AL always, NE never, ER only on error/reject, SU only on success."""
    if condition == "NE":
        return False
    if condition == "ER":
        return kind != "A"
    if condition == "SU":
        return kind == "A"
    return True  # AL (and unknown values: answering is the safe side)


def acknowledgements(msh: MshInfo | None, stored: Verdict, applied: Verdict | None) -> list[tuple[str, Verdict]]:
    """The ACKs to send, in order, as (MSA-1 code, verdict).

    ``stored``: the commit stage (landing); ``applied``: the application stage (conversion), None when the
    listener acknowledges on storage only (``ack: stored``) or storage failed.

    * original mode: one ACK, ``AA``/``AE``/``AR`` from ``applied`` when there is one, else from ``stored``;
    * enhanced mode: an accept ACK ``CA``/``CE``/``CR`` from ``stored`` when MSH-15 asks (empty MSH-15
      counts as ``AL``), then an application ACK ``AA``/``AE``/``AR`` from ``applied`` when MSH-16 asks
      (empty MSH-16 counts as ``NE``: the sender asked for none). Without ``applied`` no application ACK
      is sent.
    """
    if not is_enhanced(msh):
        verdict = applied if applied is not None and stored.kind == "A" else stored
        return [("A" + verdict.kind, verdict)]
    assert msh is not None
    out: list[tuple[str, Verdict]] = []
    if _wanted(msh.accept_ack_type or "AL", stored.kind):
        out.append(("C" + stored.kind, stored))
    if applied is not None and stored.kind == "A" and _wanted(msh.application_ack_type or "NE", applied.kind):
        out.append(("A" + applied.kind, applied))
    return out


# -- batches (2.10.3) -------------------------------------------------------------------------------


def _first_segments(frame: bytes) -> dict[str, list[str]]:
    """FHS and BHS fields of a batch (``fields[n]`` is XXX-n, like MSH with the separator as field 1)."""
    found: dict[str, list[str]] = {}
    for line in frame.replace(b"\n", b"\r").split(b"\r"):
        line = line.removeprefix(_BOM).lstrip()
        name = line[:3].decode("ascii", "replace")
        if name in ("FHS", "BHS") and name not in found and len(line) > 4:
            sep = chr(line[3])
            fields = line.decode("iso8859-1").split(sep)
            found[name] = [name, sep, *fields[1:]]
        if name == "MSH":
            break
    return found


def is_batch(frame: bytes) -> bool:
    """True when ``frame`` starts (after a BOM and whitespace) with FHS or BHS (2.10.3 batch protocol)."""
    return frame.removeprefix(_BOM).lstrip()[:3] in (b"FHS", b"BHS")


def build_batch_ack(frame: bytes, acks: list[bytes], *, now: datetime, control_id: str) -> bytes:
    """A batch acknowledgement (2.10.3.3): ``FHS``/``BHS`` (when the input had them) with sender and receiver
    swapped, FHS-11/BHS-11 a new control id and FHS-12/BHS-12 the original's FHS-11/BHS-11, one ``ACK``
    per message of the input batch in input order, ``BTS`` (BTS-1 the number of ACKs) and ``FTS``."""
    head = _first_segments(frame)
    timestamp = _timestamp(now)
    segments: list[str] = []

    def header(name: str) -> str:
        f = head[name] + [""] * 13
        enc = f[2] if 2 <= len(f[2]) <= 5 else _STANDARD_ENCODING

        def std(value: str) -> str:
            table = {ord(f[1]): "|"}
            for i, ch in enumerate(enc[:4]):
                table[ord(ch)] = _STANDARD_ENCODING[i]
            return value.translate(table)

        fields = [name, _STANDARD_ENCODING, std(f[5]), std(f[6]), std(f[3]), std(f[4]), timestamp, "", "", ""]
        return "|".join([*fields, control_id, std(f[11])])

    if "FHS" in head:
        segments.append(header("FHS"))
    if "BHS" in head or "FHS" not in head:
        head.setdefault("BHS", ["BHS", "|", "^~\\&"])
        segments.append(header("BHS"))
    body = "\r".join(segments) + "\r"
    tail = f"BTS|{len(acks)}\r" + ("FTS|1\r" if "FHS" in head else "")
    messages = b"".join(a if a.endswith(b"\r") else a + b"\r" for a in acks)
    return body.encode("iso8859-1", "replace") + messages + tail.encode()
