"""PHI-free search keys of a landed message, read from its raw bytes at landing time.

The message store keeps these in index columns so that the console can search without storing (or
scanning) PHI:

* ``message_type``: HL7 v2 MSH-9 with ``^`` between its components (``ORU^R01^ORU_R01``); for DICOM the
  SOP Class keyword (``ComprehensiveSRStorage``), else its UID;
* ``control_id``: MSH-10 (Message Control ID, HL7 v2.5.1 §2.14.9.10) of the first message, or the DICOM
  SOP Instance UID (0008,0018);
* ``accession_hashes``: :func:`accession_hash` of every accession number in the message (HL7: the field the
  sender's profile names, ``accession_field``, default OBR-18, one per ORC/OBR group; DICOM: Accession
  Number (0008,0050)). Only the SHA-256 is stored; a search for an accession hashes the query the same way.

Accession hashes are ``SHA-256("accession|" + value)`` (the construction of
:func:`pipelines.common.ids.hashed_key`), over the value alone, not its issuer: an operator searching
knows the number, rarely the issuer. Like the partition keys, a plain hash of a short number can be
reversed by trying all numbers: the index keeps accession numbers out of the file and out of the
console's URLs and logs, it is not an anonymisation.

:func:`index_message` never raises: a message whose header cannot be read gets empty keys (it is still
landed; conversion reports what is wrong with it).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from engine.sources.hl7_ack import python_codec, read_msh
from pipelines.common.ids import hashed_key
from pipelines.context import MappingContext
from pipelines.hl7v2.er7 import NONE, Delimiters, decode_message, parse_message
from pipelines.hl7v2.fields import component, field
from pipelines.hl7v2.framing import split_stream

__all__ = ["MAX_ACCESSIONS", "IndexKeys", "MessageIndexer", "accession_hash"]

log = logging.getLogger("engine.message_index")

#: At most this many distinct accession hashes are kept per stored message (a batch file may hold more).
MAX_ACCESSIONS = 100
_MAX_KEY = 200  # characters kept of a message type / control id


def accession_hash(value: str) -> str:
    """The 64-hex SHA-256 an accession number is indexed and searched by (surrounding blanks ignored)."""
    return hashed_key("accession", value.strip())


@dataclass(frozen=True, slots=True)
class IndexKeys:
    message_type: str | None = None
    control_id: str | None = None
    accession_hashes: tuple[str, ...] = ()


class MessageIndexer:
    """Computes :class:`IndexKeys` for HL7 v2 (ER7, any framing ``engine map`` reads) and DICOM Part 10."""

    def __init__(self, context: MappingContext | None = None) -> None:
        self.context = context or MappingContext()

    def __call__(self, payload: bytes, content_type: str) -> IndexKeys:
        return self.index(payload, content_type)

    def index(self, payload: bytes, content_type: str) -> IndexKeys:
        try:
            if "dicom" in content_type.lower() or payload[128:132] == b"DICM":
                return self._dicom(payload)
            return self._hl7(payload)
        except Exception as exc:  # keys are a convenience: landing never fails because of them
            log.debug("message index: header not readable", extra={"error_class": type(exc).__name__})
            return IndexKeys()

    def _hl7(self, payload: bytes) -> IndexKeys:
        if payload.startswith(b"MSH") and b"\rMSH" not in payload and b"\nMSH" not in payload:
            return self._hl7_single(payload)
        return self._hl7_stream(payload)

    def _hl7_single(self, payload: bytes) -> IndexKeys:
        """One plain message (what MLLP lands): the MSH and the accession segments only, ~10x cheaper than
        tokenizing the whole message; gives the same keys as :meth:`_hl7_stream`."""
        msh = read_msh(payload)
        if msh is None:
            return IndexKeys()
        enc = msh.encoding_characters
        d = Delimiters(
            msh.field_separator,
            enc[0],
            enc[1] if len(enc) > 1 else NONE,  # a delimiter MSH-2 does not declare does not exist (as in er7)
            enc[2] if len(enc) > 2 else NONE,
            enc[3] if len(enc) > 3 else NONE,
        )
        profile = self.context.sender(msh.sending_application.split(d.component)[0],
                                      msh.sending_facility.split(d.component)[0])
        seg_name, _, num = profile.accession_field.partition("-")
        prefix = (seg_name + msh.field_separator).encode("ascii")
        hashes: list[str] = []
        for line in _segments(payload, prefix):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text = line.decode(python_codec(msh.charset), errors="replace")
            parts = text.split(msh.field_separator)
            raw = parts[int(num)] if len(parts) > int(num) else ""
            value = component(raw.split(d.repetition)[0], d, 1).split(d.subcomponent)[0]
            if value.strip() and (key := accession_hash(value)) not in hashes:
                hashes.append(key)
        message_type = "^".join(msh.message_type.split(d.component)) or None
        return IndexKeys(_cut(message_type), _cut(msh.control_id), tuple(hashes[:MAX_ACCESSIONS]))

    def _hl7_stream(self, payload: bytes) -> IndexKeys:
        message_type: str | None = None
        control_id: str | None = None
        hashes: list[str] = []
        for chunk in split_stream(payload):
            if chunk.junk:
                continue
            text, _codec = decode_message(chunk.data)
            try:
                msg = parse_message(text)
            except Exception:  # a broken message (a future dead letter) is still found by its MSH
                msh_info = read_msh(chunk.data)
                if msh_info is not None and message_type is None:
                    message_type = msh_info.message_type.replace(msh_info.encoding_characters[0], "^") or None
                    control_id = msh_info.control_id.strip() or None
                continue
            d = msg.delimiters
            msh = msg.segments[0]
            if message_type is None:
                message_type = "^".join(p for p in field(msh, 9).split(d.component)) or None
                control_id = field(msh, 10).strip() or None
            profile = self.context.sender(component(field(msh, 3), d, 1), component(field(msh, 4), d, 1))
            seg_name, _, num = profile.accession_field.partition("-")
            for seg in msg.segments:
                if seg[0] != seg_name:
                    continue
                value = component(field(seg, int(num)).split(d.repetition)[0], d, 1).split(d.subcomponent)[0]
                if value.strip():
                    key = accession_hash(value)
                    if key not in hashes:
                        hashes.append(key)
            if len(hashes) >= MAX_ACCESSIONS:
                break
        return IndexKeys(_cut(message_type), _cut(control_id), tuple(hashes[:MAX_ACCESSIONS]))

    def _dicom(self, payload: bytes) -> IndexKeys:
        import pydicom
        from pydicom.uid import UID

        ds = pydicom.dcmread(
            io.BytesIO(payload),
            force=True,
            stop_before_pixels=True,
            specific_tags=[0x00080016, 0x00080018, 0x00080050, 0x00020002, 0x00020003],
        )
        sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or "")
        sop_instance = str(
            ds.get("SOPInstanceUID", "") or getattr(ds.file_meta, "MediaStorageSOPInstanceUID", "") or ""
        )
        keyword = UID(sop_class).keyword if sop_class else ""
        accession = str(ds.get("AccessionNumber", "") or "")
        hashes = (accession_hash(accession),) if accession.strip() else ()
        return IndexKeys(_cut(keyword or sop_class or None), _cut(sop_instance or None), hashes)


def _segments(payload: bytes, prefix: bytes) -> list[bytes]:
    """The lines of ``payload`` that start with ``prefix`` (segment id + field separator), in order."""
    found: list[tuple[int, bytes]] = []
    for sep in (b"\r", b"\n"):
        start = 0
        while (i := payload.find(sep + prefix, start)) >= 0:
            begin = i + 1
            ends = [e for e in (payload.find(b"\r", begin), payload.find(b"\n", begin)) if e >= 0]
            end = min(ends) if ends else len(payload)
            found.append((begin, payload[begin:end]))
            start = end
    return [line for _, line in sorted(found)]


def _cut(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[:_MAX_KEY] or None
