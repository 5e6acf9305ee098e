"""KafkaSink: document Bundles to the output topic (idempotent producer, ``acks=all``).

* key = ``Output.partition_key`` (sha256 hex of the issuer-qualified accession; never PHI), so every version
  of one report lands on the same partition, in order; value = ``Output.body`` (the exact bytes a folder
  sink writes).
* provenance headers: ``content-type``, ``engine.envelope-id``, ``engine.bundle-id``, ``engine.report-id``,
  ``engine.kind``, ``source``, ``hl7.control-id`` / ``dicom.sop-instance-uid`` (from ``Output.ids``),
  ``engine.pipeline.version``. Ids only: no names, no report text.
* ``write`` only queues; ``flush`` waits for every queued record's broker acknowledgement and raises
  :class:`engine.errors.TransientError` (timeouts, broker errors) or :class:`engine.errors.PermanentError`
  (e.g. ``MessageSizeTooLargeError``). Consumers de-duplicate by key + ``engine.bundle-id``.
"""

from __future__ import annotations

import contextlib
import time
from importlib import metadata
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kerr

from engine.convert import Output
from engine.errors import PermanentError, TransientError
from engine.kafka._producer import ProducerHolder, classify, encode_headers
from engine.kafka.settings import KafkaSettings
from engine.sources.base import Envelope

__all__ = ["CONTENT_FHIR_JSON", "KafkaSink", "pipeline_version"]

CONTENT_FHIR_JSON = "application/fhir+json"

# Output.ids key -> header name (anything else in ids is not published)
_ID_HEADERS = {
    "control_id": "hl7.control-id",
    "hl7_control_id": "hl7.control-id",
    "message_type": "hl7.message-type",
    "sop_uid": "dicom.sop-instance-uid",
    "sop_instance_uid": "dicom.sop-instance-uid",
    "study_uid": "dicom.study-instance-uid",
    "study_instance_uid": "dicom.study-instance-uid",
    "accession_hash": "engine.accession-hash",
}


def pipeline_version() -> str:
    try:
        return metadata.version("imaging-report-engine")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class KafkaSink:
    """:class:`engine.sinks.base.Sink` writing to ``settings.output_topic``."""

    def __init__(
        self,
        settings: KafkaSettings,
        name: str = "kafka",
        producer: KafkaProducer | None = None,
        topic: str | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.topic = topic or settings.output_topic
        self._holder = ProducerHolder(settings, producer)
        self._futures: list[tuple[Any, str]] = []  # (FutureRecordMetadata, bundle id)
        self._version = pipeline_version()
        self.written = 0  # records confirmed by the broker

    def headers(self, output: Output, envelope: Envelope) -> list[tuple[str, bytes]]:
        items: list[tuple[str, str | None]] = [
            ("content-type", CONTENT_FHIR_JSON),
            ("engine.envelope-id", envelope.id),
            ("engine.bundle-id", output.bundle_id),
            ("engine.report-id", output.report_id),
            ("engine.kind", output.kind),
            ("source", envelope.headers.get("source") or envelope.source),  # the ingress (mllp, dicom, ...)
        ]
        seen = set()
        for key, header in _ID_HEADERS.items():
            value = output.ids.get(key)
            if value and header not in seen:
                seen.add(header)
                items.append((header, str(value)))
        items.append(("engine.pipeline.version", self._version))
        return encode_headers(items)

    def write(self, output: Output, envelope: Envelope) -> None:
        key = output.partition_key.encode("ascii") if output.partition_key else None
        what = f"kafka sink {self.topic}: bundle {output.bundle_id}"
        try:
            future = self._holder.producer.send(
                self.topic, value=output.body, key=key, headers=self.headers(output, envelope)
            )
        except (kerr.KafkaError, TypeError, ValueError) as exc:
            self._holder.recover()
            raise classify(exc, what) from exc
        self._futures.append((future, output.bundle_id))

    def flush(self) -> None:
        futures, self._futures = self._futures, []
        if not futures:
            return
        deadline = time.monotonic() + self.settings.delivery_timeout_s + self.settings.request_timeout_ms / 1000
        with contextlib.suppress(kerr.KafkaError):  # per-record outcomes below decide
            self._holder.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
        permanent: PermanentError | None = None
        transient: TransientError | None = None
        for future, bundle_id in futures:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except kerr.KafkaError as exc:
                err = classify(exc, f"kafka sink {self.topic}: bundle {bundle_id}")
                if isinstance(err, PermanentError):
                    permanent = permanent or err
                else:
                    transient = transient or err
                continue
            self.written += 1
        if transient is not None or permanent is not None:
            self._holder.recover()
        if transient is not None:  # retry the whole batch: transient wins over permanent
            raise transient
        if permanent is not None:
            raise permanent

    def close(self) -> None:
        self._holder.close()
