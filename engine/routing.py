"""Partition keys at landing time, read from the message header alone (never by converting the message).

The key is the one the outputs get (:func:`engine._dispatch.partition_key`): SHA-256 of the issuer-qualified
accession, else the Study Instance UID, else the report identifier, else the first patient identifier, so an
ORU and the SR of one study, and every version of one report, land on one Kafka partition in order.

* HL7 v2: MSH (sender profile: accession field and issuer), then the ORDER_OBSERVATION groups of the first
  PATIENT_RESULT (ORC/OBR, ZDS/IPC); OBX rows are read only when no accession exists, for a Study UID.
  The order of the groups is the one the mapper gives the report's orders (content-less groups before the
  first group with OBX rows are its grouped procedures).
* DICOM: the header (``pipelines.dicom_sr.part10.read_part10``, the mapper's one-pass reader; pydicom for
  other transfer syntaxes; content tree cut out unread): Accession Number with its issuer, Study UID,
  SOP Instance UID.

Returns None for what is not an ORU or cannot be read (it will be filtered or dead-lettered anyway).
"""

from __future__ import annotations

from pipelines.common.ids import hashed_key, slug
from pipelines.common.model import Ident
from pipelines.context import MappingContext
from pipelines.errors import MappingError
from pipelines.hl7v2 import datatypes as dt
from pipelines.hl7v2.er7 import decode_message, parse_message
from pipelines.hl7v2.fields import component
from pipelines.hl7v2.fields import field as fld
from pipelines.hl7v2.groups import split_groups
from pipelines.hl7v2.observations import read_observations
from pipelines.hl7v2.oru import _accession, _ei, _extra_study_uid, _patient_blocks  # one rule, the mapper's

__all__ = ["dicom_key", "hl7_key"]


def hl7_key(raw: bytes, ctx: MappingContext) -> str | None:
    """The partition key of one HL7 v2 message (its first report)."""
    try:
        text, codec = decode_message(raw)
        msg = parse_message(text)
    except MappingError:
        return None
    d = msg.delimiters
    msh = msg.segments[0]
    if component(fld(msh, 9), d, 1).upper() != "ORU":
        return None
    app, facility = component(fld(msh, 3), d, 1), component(fld(msh, 4), d, 1)
    profile = ctx.sender(app, facility)
    base = f"{ctx.system_base}/{slug(facility or app or 'unknown-sender')}"
    blocks = _patient_blocks(msg.segments[1:])
    if not blocks:
        return None
    groups, _header = split_groups(blocks[0])
    if not groups:
        return None
    first = next((i for i, g in enumerate(groups) if g.obx), 0)
    # the mapper's order list: [groups before the first report group, last first], the report group, followers
    ordered = [*reversed(groups[:first]), *groups[first:]]
    for group in ordered:
        accession = _accession(group, d, profile, base)
        if accession is not None:
            return hashed_key(accession.system, accession.value)
    group = groups[first]
    content = read_observations(group.obx, d, base, codec)
    uids = list(content.study_uids) + [u for s in group.extra if (u := _extra_study_uid(s, d))]
    if uids:
        return hashed_key("urn:dicom:uid", uids[0])
    orc = group.orc or []
    ident: Ident | None = _ei(fld(orc, 3) or fld(group.obr, 3), d, base, f"{base}/filler-order", "FILL") or _ei(
        fld(orc, 2) or fld(group.obr, 2), d, base, f"{base}/placer-order", "PLAC"
    )
    if ident is not None:
        return hashed_key(ident.system, ident.value)
    pid = blocks[0][0]
    fallback = profile.patient_id_system or f"{base}/patient-id"
    idents = dt.cx(fld(pid, 3), d, ctx.system_base, fallback)
    return hashed_key(idents[0].system, idents[0].value) if idents else None


def dicom_key(data: bytes, ctx: MappingContext) -> str | None:
    """The partition key of a DICOM object, from its header."""
    from pydicom.dataset import Dataset

    from pipelines.dicom_sr.header import read_header
    from pipelines.dicom_sr.part10 import read_part10
    from pipelines.dicom_sr.rawtree import split_content
    from pipelines.dicom_sr.reader import read_dataset

    try:
        fast = None if data[:64].lstrip()[:1] == b"{" else read_part10(data)  # one pass, no dcmread
        ds: Dataset
        if fast is not None:
            ds = fast[0]
        else:  # not a plain Part 10 Little Endian file (or DICOM JSON): pydicom, content tree cut out unread
            split = None if data[:64].lstrip()[:1] == b"{" else split_content(data)
            ds = read_dataset(split[0] if split else data)
        h = read_header(ds, ctx)
    except Exception:  # untrusted bytes: unreadable means no key (the converter rejects it with the reason)
        return None
    for order in h.orders:
        if order.accession is not None:
            return hashed_key(order.accession.system, order.accession.value)
    if h.studies:
        return hashed_key("urn:dicom:uid", h.studies[0].uid)
    if h.sop_uid:
        return hashed_key("urn:dicom:uid", f"urn:oid:{h.sop_uid}")
    return None
