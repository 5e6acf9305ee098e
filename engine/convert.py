"""Raw bytes in, serialized FHIR outputs out: the one call shared by ``engine map`` and the service.

``Converter.convert(data)`` detects the input kind by content (HL7 v2 stream, DICOM Part 10 or raw
dataset), splits HL7 streams into messages, maps each message with the pure pipelines and shapes the
result for the deployment model. Each message either yields outputs or a :class:`Rejection` (with its
own original bytes and a one-line reason); one bad message never costs its neighbours.

``Output.body`` is the exact byte string written by every sink, so a folder sink and ``engine map``
produce byte-identical files for the same input.
"""

from __future__ import annotations

from engine.outcomes import Conversion, Filtered, Output, Rejection
from pipelines.context import MappingContext

__all__ = ["Conversion", "Converter", "Filtered", "Output", "Rejection", "partition_key_for"]


class Converter:
    """Stateless apart from its immutable context; safe to share between threads."""

    def __init__(self, context: MappingContext | None = None, model: str = "document") -> None:
        if model != "document":
            from pipelines.output.models import shaper_for

            shaper_for(model)  # ValueError naming the available models
        self.context = context or MappingContext()
        self.model = model

    def convert(self, data: bytes) -> Conversion:
        from engine._dispatch import convert_bytes

        return convert_bytes(data, self.context, self.model)


def partition_key_for(payload: bytes, context: MappingContext | None = None) -> str | None:
    """The partition key of a raw message before it is stored (Kafka raw topics): the same key its
    outputs get (SHA-256 of the issuer-qualified accession, else Study UID, else report id, else patient),
    so an ORU and the SR of one study, and every version of one report, stay in order on one partition.
    Read from the header alone (MSH/ORC/OBR, or the DICOM header: :mod:`engine.routing`), never by
    converting the message. None when the message is not an ORU or cannot be read. For a stream of several
    messages, the first message's key."""
    from engine._dispatch import is_dicom
    from engine.routing import dicom_key, hl7_key
    from pipelines.hl7v2 import split_stream

    ctx = context or MappingContext()
    if is_dicom(payload):
        return dicom_key(payload, ctx)
    chunk = next((c for c in split_stream(payload) if not c.junk), None)
    return hl7_key(chunk.data, ctx) if chunk is not None else None
