"""From a conversion result to what an MLLP sender is told (pure, no I/O).

A :class:`~engine.sources.hl7_ack.Verdict` per message: ``A`` converted, ``R`` filtered (not a report the
engine converts: ERR-3 ``200^Unsupported message type``), ``E`` rejected (conversion failed: ERR-3
``207^Application internal error``). :func:`batch_response` builds the HL7 v2.5.1 §2.10.3.3 batch
acknowledgement for an FHS/BHS frame: one original-mode ACK per message, in input order.
"""

from __future__ import annotations

import time
from datetime import datetime

from engine.convert import Converter
from engine.outcomes import Conversion, Filtered, Rejection
from engine.sources.hl7_ack import (
    ERROR_APPLICATION_INTERNAL,
    ERROR_SEGMENT_SEQUENCE,
    ERROR_UNSUPPORTED_MESSAGE_TYPE,
    MshInfo,
    Verdict,
    ack_control_id,
    build_ack,
    build_batch_ack,
)
from pipelines.context import MappingContext

__all__ = [
    "NOT_HL7",
    "batch_response",
    "batch_verdicts",
    "full_conversion",
    "init_converter_process",
    "merge",
    "slim_conversion",
    "verdicts",
]

NOT_HL7 = Verdict("R", "not an HL7 v2 message (no MSH segment)", ERROR_SEGMENT_SEQUENCE)
CONVERSION_BUG = Verdict("E", "conversion failed: internal error (the message is stored)")


def verdicts(conversion: Conversion) -> dict[int, Verdict]:
    """Per message index (1-based, as in ``Conversion``): ``A`` converted, ``R`` filtered, ``E`` rejected."""
    out: dict[int, Verdict] = {}
    for f in conversion.filtered:
        out[f.index] = Verdict("R", f"not converted: {f.reason}", ERROR_UNSUPPORTED_MESSAGE_TYPE)
    for r in conversion.rejections:
        out[r.index] = Verdict("E", f"conversion failed: {r.reason}", ERROR_APPLICATION_INTERNAL)
    for n in range(1, conversion.messages + 1):
        out.setdefault(n, Verdict("A"))
    return out


def merge(per: dict[int, Verdict]) -> Verdict:
    """One verdict for a frame that held one message (or, rarely, several back to back without a batch
    header): the worst of them (E over R over A), so a sender is never told AA for a message not converted."""
    if not per:
        return Verdict("E", "conversion failed: no message found")
    for kind in ("E", "R"):
        for verdict in per.values():
            if verdict.kind == kind:
                return verdict
    return Verdict("A")


def batch_verdicts(
    mshs: list[MshInfo | None], stored: Verdict, conversion: Conversion | None, converted: bool
) -> list[Verdict]:
    """The verdict per batch message: the storage verdict when storing failed; with ``ack: converted`` the
    conversion's (every message ``E`` when the converter failed unexpectedly); else ``A`` (stored)."""
    if stored.kind != "A":
        return [stored for _ in mshs]
    per = verdicts(conversion) if conversion is not None else {}
    out = []
    for n, msh in enumerate(mshs, start=1):
        if msh is None:
            out.append(NOT_HL7)
        elif not converted:
            out.append(Verdict("A"))
        elif conversion is None:
            out.append(CONVERSION_BUG)
        else:
            out.append(per.get(n, Verdict("A")))
    return out


def batch_response(payload: bytes, mshs: list[MshInfo | None], results: list[Verdict], now: datetime) -> bytes:
    """FHS/BHS, one ACK per message (AA/AE/AR, reason in MSA-3 and ERR), BTS/FTS (§2.10.3.3)."""
    acks: list[bytes] = []
    for n, (msh, verdict) in enumerate(zip(mshs, results, strict=True), start=1):
        code = "A" + verdict.kind
        ack_id = ack_control_id(msh.control_id if msh else f"batch-{n}", time.time_ns(), code)
        acks.append(build_ack(msh, code, now=now, control_id=ack_id, text=verdict.text, error=verdict.error))
    batch_id = ack_control_id("batch", time.time_ns(), "BA")
    return build_batch_ack(payload, acks, now=now, control_id=batch_id)


# -- conversion in a process pool (``sources.mllp.convert_processes``) ----------------------------------

_CONVERTER: Converter | None = None


def init_converter_process(context: MappingContext, model: str = "document") -> None:
    """Process-pool initializer: one converter per worker process, with the engine's mapping context and output
    model (the conversion may be handed to the worker, which publishes its Bundles as they are)."""
    global _CONVERTER
    _CONVERTER = Converter(context, model)


def slim_conversion(payload: bytes) -> Conversion:
    """Convert in a pool process and return only what the ACK needs (counts, reasons), not Bundles or bytes."""
    converter = _CONVERTER or Converter()
    full = converter.convert(payload)
    return Conversion(
        messages=full.messages,
        rejections=[Rejection(r.index, r.reason, b"", r.error_class) for r in full.rejections],
        filtered=[Filtered(f.index, f.reason, b"", f.category) for f in full.filtered],
    )


def full_conversion(payload: bytes) -> Conversion:
    """Convert in a pool process and return the whole result (Bundles, dead-letter bytes), for a landing that
    hands it to the worker; filtered parts drop their bytes (never dead-lettered)."""
    converter = _CONVERTER or Converter()
    full = converter.convert(payload)
    full.filtered = [Filtered(f.index, f.reason, b"", f.category) for f in full.filtered]
    return full
