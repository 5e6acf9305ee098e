"""Input detection and per-message conversion behind :class:`engine.convert.Converter`."""

from __future__ import annotations

import contextlib
import re

from engine.outcomes import Conversion, Filtered, Output, Rejection
from pipelines.common.ids import hashed_key, uuid_for
from pipelines.common.model import Report
from pipelines.context import MappingContext
from pipelines.errors import MappingError, StatusOnly, UnsupportedMessage
from pipelines.hl7v2 import map_message, split_stream
from pipelines.output import serialize, shape
from pipelines.output.rest import split_documents

__all__ = ["convert_bytes", "convert_dicom", "convert_message", "is_dicom", "partition_key"]


_DICOM_JSON = re.compile(rb'^\s*[\[{]\s*(?:\{\s*)?"[0-9A-Fa-f]{8}"\s*:\s*\{\s*"vr"')


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 (128-byte preamble + "DICM"), a raw dataset starting with a group 0002/0008 tag, or a
    DICOM JSON dataset (PS3.18 F.2: an object keyed by 8-hex-digit tags with "vr" members)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if data[:1] in (b"{", b"[", b" ", b"\n", b"\r", b"\t") and _DICOM_JSON.match(data[:200]):
        return True
    return (
        len(data) >= 8
        and data[:2] in (b"\x02\x00", b"\x08\x00")
        and data[2:4] < b"\x20\x00"
        and not data.startswith((b"MSH", b"\x0b"))
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(reason: str) -> str:
    """Safety net for rejection reasons: one printable line, bounded length."""
    return _CONTROL.sub(" ", reason).strip()[:300] or "rejected"


def convert_bytes(data: bytes, ctx: MappingContext, model: str) -> Conversion:
    result = Conversion()
    if not data.strip():
        result.messages = 1
        result.rejections.append(Rejection(1, "empty input", data, "ParseError"))
        return result
    if is_dicom(data):
        result.messages = 1
        convert_dicom(data, ctx, model, result)
        return result
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # a UTF-16 file (e.g. saved as "Unicode" on Windows)
        with contextlib.suppress(UnicodeDecodeError):
            data = data.decode("utf-16").encode("utf-8")
    chunks = split_stream(data)
    if not chunks:
        result.messages = 1
        result.rejections.append(Rejection(1, "no HL7 v2 message (no MSH segment) and not DICOM", data, "ParseError"))
        return result
    for n, chunk in enumerate(chunks, start=1):
        result.messages += 1
        if chunk.junk:
            reason = "not an HL7 v2 message (no MSH segment) and not DICOM"
            if b"\x00" in chunk.data[:4096]:
                reason = "binary data, neither an HL7 v2 message nor DICOM"
            elif not chunk.data.strip(b" \t\r\n<>R"):
                reason = "empty message"
            result.rejections.append(Rejection(n, reason, chunk.raw, "ParseError"))
            continue
        convert_message(chunk.data, chunk.raw, n, ctx, model, result)
    return result


def convert_message(data: bytes, raw: bytes, n: int, ctx: MappingContext, model: str, result: Conversion) -> None:
    """One framed HL7 v2 message (``data``; ``raw`` = its original bytes) into ``result``: outputs, or one
    :class:`Filtered` (:class:`UnsupportedMessage` and subclasses), or one :class:`Rejection` (any other
    :class:`MappingError`)."""
    try:
        reports = map_message(data, ctx)
        outputs = [o for r in reports for o in _outputs(r, model, ctx)]
    except StatusOnly as exc:
        outputs = _status_outputs(exc, model)  # harmonized model only; else filtered like UnsupportedMessage
        if not outputs:
            result.filtered.append(Filtered(n, one_line(str(exc)), raw, "UnsupportedMessage"))
            return
    except UnsupportedMessage as exc:
        result.filtered.append(Filtered(n, one_line(str(exc)), raw, type(exc).__name__))
        return
    except MappingError as exc:
        result.rejections.append(Rejection(n, one_line(str(exc)), raw, type(exc).__name__))
        return
    result.outputs.extend(outputs)


def convert_dicom(data: bytes, ctx: MappingContext, model: str, result: Conversion) -> None:
    try:
        from pipelines.dicom_sr import map_dicom
    except ImportError:
        result.rejections.append(
            Rejection(1, "DICOM input: the DICOM SR pipeline is not installed", data, "ParseError")
        )
        return
    try:
        reports = map_dicom(data, ctx)
        result.outputs.extend(o for r in reports for o in _outputs(r, model, ctx))
    except UnsupportedMessage as exc:
        result.filtered.append(Filtered(1, one_line(str(exc)), data, type(exc).__name__))
    except MappingError as exc:
        result.rejections.append(Rejection(1, one_line(str(exc)), data, type(exc).__name__))


def partition_key(report: Report) -> str | None:
    """Issuer-qualified accession, else Study Instance UID, else report identifier, else patient; hashed."""
    for order in report.orders:
        if order.accession is not None:
            return hashed_key(order.accession.system, order.accession.value)
    if report.studies:
        return hashed_key("urn:dicom:uid", report.studies[0].uid)
    if report.identifier.value:  # keeps every version of one report on one partition
        return hashed_key(report.identifier.system, report.identifier.value)
    if report.patient.identifiers:
        ident = report.patient.identifiers[0]
        return hashed_key(ident.system, ident.value)
    return None


def _status_outputs(exc: StatusOnly, model: str) -> list[Output]:
    """A status-only ORU: status patches in the harmonized model (pipelines.output.harmonized)."""
    if model != "harmonized":
        return []
    from pipelines.output.harmonized import shape_status_update

    outputs = []
    for update in exc.updates:
        bundle = shape_status_update(update)
        if bundle is None:
            continue
        acsn = next((o.accession for o in update.orders if o.accession is not None), None)
        key = hashed_key(acsn.system, acsn.value) if acsn else hashed_key("urn:dicom:uid", update.studies[0].uid)
        body = serialize(bundle)
        outputs.append(Output(bundle["id"], body, bundle["id"], key, "harmonized-status", dict(update.ids)))
    return outputs


def _outputs(report: Report, model: str, ctx: MappingContext) -> list[Output]:
    """The outputs of one report version: one Bundle, or for the ``rest`` model the document Bundle and then the
    transaction (:func:`pipelines.output.rest.split_documents`), all with the report's ``report_id`` (sinks keep
    them in order)."""
    bundle, kind = shape(report, model, ctx.model_options(model))
    if kind in ("document", "minimal"):
        dr = bundle["entry"][1 if kind == "document" else 0]["resource"]
    else:  # transaction / batch models: the report's DiagnosticReport wherever it sits
        dr = next((e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"),
                  bundle)
    # harmonized transactions update the DiagnosticReport by identifier (no id in the resource)
    report_id = dr.get("id") or uuid_for("DiagnosticReport", report.identifier.system, report.identifier.value)
    parts = [(bundle, kind)] if kind in ("document", "minimal") else split_documents(bundle, kind)
    key = partition_key(report)
    return [Output(bundle_id=part["id"], body=serialize(part), report_id=report_id, partition_key=key,
                   kind=part_kind, ids=dict(report.ids)) for part, part_kind in parts]
