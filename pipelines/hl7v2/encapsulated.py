"""Documents in OBX rows: ED encapsulated data (HL7 v2.5.1 2.A.24) and RP reference pointers (2.A.65) ->
:class:`~pipelines.common.model.Attachment` (``DiagnosticReport.presentedForm``)."""

from __future__ import annotations

import base64
import re

from pipelines.common.model import Attachment
from pipelines.hl7v2.er7 import Delimiters
from pipelines.hl7v2.fields import unescape

__all__ = ["read_ed_run", "reference_pointer"]

_URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)


def reference_pointer(raw5: str, d: Delimiters) -> Attachment | None:
    """RP (HL7 v2.5.1 2.A.65: pointer ^ application ID ^ type of data ^ subtype) whose pointer is an absolute
    http(s) URL: the report document by reference (v2-to-FHIR RP -> Attachment.url, contentType from RP.3/RP.4).
    Other pointers only mean something to the sending application (``7795082776^UK^ZB``): not converted."""
    parts = [unescape(p, d).strip() for p in raw5.split(d.repetition)[0].split(d.component)]
    url = parts[0] if parts else ""
    if not _URL.fullmatch(url):
        return None
    kind = parts[2].lower() if len(parts) > 2 else ""
    subtype = parts[3].lower() if len(parts) > 3 else ""
    if "/" in subtype:
        mime = subtype
    elif kind and subtype and re.fullmatch(r"[a-z0-9.+-]+", kind + subtype):
        mime = f"{kind}/{subtype}"
    else:
        mime = ""
    return Attachment(content_type=mime, data_b64="", url=url)


def read_ed_run(raws: list[str], d: Delimiters, charset: str) -> tuple[list[Attachment], str | None]:
    """OBX-5 values of consecutive ED rows of one observation (same OBX-3 and OBX-4 sub-ID, 7.4.2.4): one
    document sent in pieces (Base64 split anywhere or each piece encoded alone; continuation rows with data
    only), or, when every row reads alone and starts with the same file signature (``%PDF``), whole documents one
    after the other under one (empty) sub-ID. Returns the attachments and, when a document was sent but cannot
    be read, why (no content, no PHI)."""
    if len(raws) > 1:
        alone = [_encapsulated(r, d, charset) for r in raws]
        heads = {base64.b64decode(f.data_b64[:8])[:4] if isinstance(f, Attachment) else b"" for f in alone}
        if len(heads) == 1 and len(next(iter(heads))) == 4:
            return [f for f in alone if isinstance(f, Attachment)], None
    form = _encapsulated(raws[0], d, charset, [_ed_data(r, d) for r in raws[1:]])
    if isinstance(form, Attachment):
        return [form], None
    return [], form if any(r.strip() for r in raws) else None


def _ed_data(raw5: str, d: Delimiters) -> str:
    """The data (ED.5) of a continuation row: after the four header components, or the whole value when the
    row carries only data."""
    parts = raw5.split(d.component)
    return d.component.join(parts[4:]) if len(parts) >= 5 else raw5


def _join_base64(pieces: list[str]) -> str | None:
    """Base64 sent in pieces: split anywhere (join the text) or each piece encoded on its own (join the
    bytes). Padding left out is implied by the length (RFC 4648 §3.2). None when it is not Base64."""
    joined = "".join(pieces)
    for candidate in ([joined], pieces) if len(pieces) > 1 else ([joined],):
        data = b""
        try:
            for piece in candidate:
                if len(piece) % 4 in (2, 3):
                    piece += "=" * (-len(piece) % 4)
                data += base64.b64decode(piece, validate=True)
        except ValueError:
            continue
        return base64.b64encode(data).decode("ascii") if candidate is pieces else candidate[0] + "=" * (
            -len(candidate[0]) % 4
        )
    return None


def _encapsulated(raw5: str, d: Delimiters, charset: str, more: list[str] | None = None) -> Attachment | str:
    """ED: source application ^ type of data ^ data subtype ^ encoding ^ data (HL7 v2 2.A.24); ``more``: the
    data of continuation rows. The reason (without content) when the document cannot be read."""
    parts = raw5.split(d.component)
    rest = "".join(more or ())
    if len(parts) < 5 or not (d.component.join(parts[4:]) + rest).strip():
        return "the encapsulated document has no data (ED.5)"
    kind, subtype, encoding = (unescape(p, d).strip() for p in parts[1:4])
    data = d.component.join(parts[4:])
    if "/" in subtype:
        mime = subtype.lower()
    elif subtype.upper() == "PDF":
        mime = "application/pdf"
    elif subtype.upper() in ("XML", "CDA", "HL7-CDA"):
        mime = "application/hl7-cda+xml" if "CDA" in subtype.upper() else "text/xml"
    else:
        mime = f"{kind.lower() or 'application'}/{subtype.lower() or 'octet-stream'}"
    pieces = [data, *(more or ())]
    if encoding.upper() == "BASE64":
        joined = _join_base64([re.sub(r"\s+", "", unescape(p, d)) for p in pieces])
        if joined is None:
            return "the encapsulated document data is not valid Base64 (ED.4 Base64)"
        b64 = joined
    elif encoding.upper() == "HEX":
        try:
            b64 = base64.b64encode(bytes.fromhex("".join(unescape(p, d) for p in pieces))).decode("ascii")
        except ValueError:
            return "the encapsulated document data is not valid hexadecimal (ED.4 Hex)"
    else:  # A / ASCII / none: escaped text
        text = "".join(unescape(p, d, charset) for p in pieces)
        b64 = base64.b64encode(text.encode("utf-8")).decode("ascii")
    if mime == "text/xml" and "ClinicalDocument" in base64.b64decode(b64)[:2000].decode("utf-8", "ignore"):
        mime = "application/hl7-cda+xml"
    return Attachment(content_type=mime, data_b64=b64)
