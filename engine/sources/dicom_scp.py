"""DICOM C-STORE SCP (pynetdicom 3): structured reports in, persist before answering, honest statuses.

:class:`StoreScp` accepts the SR storage SOP classes, Key Object Selection, Encapsulated PDF and
Encapsulated CDA (plus Verification, so ``echoscu`` works) with the uncompressed transfer syntaxes
(implicit/explicit little endian, deflated explicit little endian, explicit big endian). For each
C-STORE request the handler lands ``event.encoded_dataset()``, the dataset exactly as the peer sent it
with a DICOM Part 10 preamble and file meta information, and answers (PS3.4 B.2.3 statuses):

===========================================  =========================================================
what happened                                status (Error Comment (0000,0902) for failures)
===========================================  =========================================================
stored (``ack: stored``), or stored and      ``0x0000`` Success
converted (``ack: converted``, the default)
stored, not a report this engine converts    ``0xC001`` Cannot understand + reason (``ack: converted``)
stored, conversion failed (dead letter)      ``0xC002`` Cannot understand + reason (``ack: converted``)
storing failed (TransientError, unexpected)  ``0xA700`` Out of Resources: the SCU retries later
the store can never take it (PermanentError) ``0x0110`` Processing Failure (kept in the dead letters)
dataset cannot be decoded                    ``0xC210`` Cannot understand (kept in the dead letters)
===========================================  =========================================================

Store first in every case: a ``0xC001``/``0xC002`` dataset is in the message store like any other.
The conversion runs in pynetdicom's association thread (never on an event loop).

**Associations.** The called AE title must be ``ae_title`` (``require_called_aet``), and when
``allowed_calling_aes`` is set the calling AE title must be in it; anything else is rejected with
A-ASSOCIATE-RJ (permanent, "called/calling AE title not recognised"). Every association is logged, accepted
or refused, with the AE titles and the peer address (no PHI); a refused one is also counted in
``engine_ingress_rejected_total{reason="refused-association"}`` and kept in the dead letters (the
A-ASSOCIATE-RQ PDU: AE titles and presentation contexts, no PHI; headers name peer, AE titles and reason).
TLS is optional (``tls``). pynetdicom's identifier logging
(``LOG_REQUEST_IDENTIFIERS``/``LOG_RESPONSE_IDENTIFIERS``) and its standard PDU/DIMSE log handlers are
switched off, and its logger is kept at WARNING unless configured otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.presentation import build_context
from pynetdicom.transport import ThreadedAssociationServer

from engine.convert import Converter
from engine.errors import PermanentError, TransientError
from engine.outcomes import Conversion
from engine.sources.base import CONTENT_DICOM, Landing
from engine.sources.door import DoorRejects
from engine.sources.listener_settings import ScpSettings, TlsSettings

__all__ = [
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_CONVERSION_FAILED",
    "STATUS_NOT_A_REPORT",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_PROCESSING_FAILURE",
    "STATUS_SUCCESS",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "VERIFICATION_SOP_CLASS",
    "ScpSettings",
    "StoreScp",
    "TlsSettings",
]

log = logging.getLogger("engine.sources.dicom_scp")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_PROCESSING_FAILURE = 0x0110  # PS3.7 C.4.2: a failure, not "retry later"
STATUS_NOT_A_REPORT = 0xC001  # PS3.4 B.2.3 "Cannot understand" (C000-CFFF): stored, not converted (filtered)
STATUS_CONVERSION_FAILED = 0xC002  # "Cannot understand": stored, conversion failed (dead letter kept)

# Storage SOP classes (PS3.4 Annex B.5) accepted by the SCP: UID -> name
STORAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.76": "Enhanced X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.71": "Acquisition Context SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.72": "Simplified Adult Echo SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.73": "Patient Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.74": "Planned Imaging Agent Administration SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.75": "Performed Imaging Agent Administration SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.65": "Chest CAD SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.69": "Colon CAD SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA Storage",
}
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
)


def quiet_pynetdicom() -> None:
    """Never log DICOM identifiers (PHI); keep pynetdicom's own logger at WARNING unless configured."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    logger = logging.getLogger("pynetdicom")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


class StoreScp:
    """Persist-before-success C-STORE SCP running in pynetdicom's server threads."""

    def __init__(
        self,
        settings: ScpSettings,
        landing: Landing,
        *,
        converter: Converter | None = None,
        door: DoorRejects | None = None,
    ) -> None:
        self.settings = settings
        self.landing = landing
        self.converter = converter or Converter()
        self.door = door or DoorRejects()
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._port = 0
        self.counters: dict[str, int] = dict.fromkeys(
            ("stored", "refused", "undecodable", "errors", "converted", "filtered", "failed", "associations",
             "refused_associations"),
            0,
        )  # fmt: skip
        self._in_flight = 0  # C-STORE handlers running
        self._idle = threading.Condition()

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when the settings asked for port 0)."""
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Bind and serve in background threads; returns once the socket is bound."""
        if self._server is not None:
            raise RuntimeError("StoreScp already started")
        quiet_pynetdicom()
        ssl_ctx = self.settings.tls.server_context() if self.settings.tls else None
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_pdu_size = self.settings.max_pdu
        ae.require_called_aet = True  # A-ASSOCIATE-RJ "called AE title not recognised" for other titles
        if self.settings.allowed_calling_aes:
            ae.require_calling_aet = list(self.settings.allowed_calling_aes)
        contexts = [build_context(uid, list(TRANSFER_SYNTAXES)) for uid in STORAGE_SOP_CLASSES]
        contexts.append(build_context(VERIFICATION_SOP_CLASS))
        server = ae.start_server(
            (self.settings.host, self.settings.port),
            block=False,
            ssl_context=ssl_ctx,
            evt_handlers=[
                (evt.EVT_C_STORE, self._on_c_store),
                (evt.EVT_ACCEPTED, self._on_accepted),
                (evt.EVT_REJECTED, self._on_rejected),
            ],
            contexts=contexts,
        )
        assert server is not None
        self._ae, self._server = ae, server
        self._port = int(server.server_address[1])
        log.info(
            "dicom scp %s on %s:%d%s",
            self.settings.ae_title,
            self.settings.host,
            self._port,
            " (TLS)" if ssl_ctx else "",
            extra={"port": self._port},
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting associations, let C-STORE requests being stored finish and be answered, then
        give associations a moment to release and abort the ones still open (idle peers)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # no new associations
        deadline = time.monotonic() + timeout
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
        grace = time.monotonic() + min(1.0, max(0.0, deadline - time.monotonic()))
        for assoc in list(server.active_associations):
            assoc.join(max(0.0, grace - time.monotonic()))
            if assoc.is_alive():
                assoc.abort()
        log.info("dicom scp stopped", extra={"port": self._port})

    # -- associations ----------------------------------------------------------------------------
    @staticmethod
    def _request(event: evt.Event) -> tuple[str, str, str]:
        """(calling AE, called AE, peer) of the association request; AE titles are not PHI."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or assoc.requestor.ae_title).strip()
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        return calling, called, f"{assoc.requestor.address}:{assoc.requestor.port}"

    def _on_accepted(self, event: evt.Event) -> None:
        calling, called, peer = self._request(event)
        self.counters["associations"] += 1
        log.info(
            "dicom scp: association accepted from %s (calling AE %s, called AE %s)",
            peer,
            calling,
            called,
            extra={"source": self.settings.name, "calling_ae": calling, "called_ae": called, "peer": peer},
        )

    def _on_rejected(self, event: evt.Event) -> None:
        calling, called, peer = self._request(event)
        if called != self.settings.ae_title:
            reason = f"called AE title {called!r} is not this SCP's ({self.settings.ae_title})"
        elif self.settings.allowed_calling_aes and calling not in self.settings.allowed_calling_aes:
            reason = f"calling AE title {calling!r} is not in allowed_calling_aes"
        else:
            reason = "association rejected (no acceptable request, or too many associations)"
        self.counters["refused_associations"] += 1
        log.warning(
            "dicom scp: association refused from %s (calling AE %s, called AE %s): %s",
            peer,
            calling,
            called,
            reason,
            extra={"source": self.settings.name, "calling_ae": calling, "called_ae": called, "peer": peer},
        )
        try:  # the request as the peer sent it (re-encoded A-ASSOCIATE-RQ PDU, PS3.8 9.3.2)
            primitive = event.assoc.requestor.primitive
            assert primitive is not None
            rq = A_ASSOCIATE_RQ()
            rq.from_primitive(primitive)
            payload, kept = rq.encode(), "application/dicom-pdu"
        except Exception:  # keep a summary instead
            summary = {"calling_ae": calling, "called_ae": called, "peer": peer, "reason": reason}
            payload, kept = json.dumps(summary, sort_keys=True).encode(), "application/json"
        self.door.reject(
            source=self.settings.name,
            reason_code="refused-association",
            reason=reason,
            payload=payload,
            content_type=CONTENT_DICOM,
            kept_type=kept,
            headers={"source.endpoint": peer, "dicom.calling-ae": calling, "dicom.called-ae": called},
        )

    # -- C-STORE -----------------------------------------------------------------------------------
    def _on_c_store(self, event: evt.Event) -> int | Dataset:
        with self._idle:
            self._in_flight += 1
        try:
            return self._store(event)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    @staticmethod
    def _status(code: int, comment: str) -> Dataset:
        status = Dataset()
        status.Status = code
        status.ErrorComment = comment[:64]  # LO: at most 64 characters
        return status

    def _store(self, event: evt.Event) -> int | Dataset:
        # ack: converted + message store: the status's conversion goes to the worker with the row (never converted
        # twice, engine.store_source.PreparedConversions); always resolved (None: the worker converts the bytes)
        hand_over: Future[Conversion | None] | None = None
        if self.settings.ack == "converted" and getattr(self.landing, "prepared", None) is not None:
            hand_over = Future()
        try:
            return self._land(event, hand_over)
        finally:
            if hand_over is not None and not hand_over.done():
                hand_over.set_result(None)

    def _land(self, event: evt.Event, hand_over: Future[Conversion | None] | None) -> int | Dataset:
        request = event.request
        assert isinstance(request, C_STORE)
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        requestor = event.assoc.requestor
        peer = f"{requestor.address}:{requestor.port}"
        calling = str(requestor.ae_title).strip()
        try:
            payload = event.encoded_dataset()
            dataset = event.dataset  # decodes with the negotiated transfer syntax (incl. deflate)
            study = str(dataset.get("StudyInstanceUID", "") or "")
            if str(dataset.get("SOPInstanceUID", "") or sop_instance) != sop_instance:
                log.warning("dicom scp: SOP Instance UID in the dataset differs from the C-STORE request")
        except Exception as exc:
            self.counters["undecodable"] += 1
            log.warning(
                "dicom scp: cannot decode dataset %s from %s: %s",
                sop_instance,
                calling,
                exc.__class__.__name__,
                extra={"sop_instance_uid": sop_instance},
            )
            raw = request.DataSet.getvalue() if request.DataSet is not None else b""
            self.door.reject(
                source=self.settings.name,
                reason_code="undecodable",
                reason=f"DICOM dataset cannot be decoded ({exc.__class__.__name__})",
                payload=bytes(raw),
                content_type=CONTENT_DICOM,
                headers={"dicom.sop-instance-uid": sop_instance, "dicom.calling-ae": calling, "source.endpoint": peer},
            )
            return STATUS_CANNOT_UNDERSTAND
        headers = {
            "dicom.sop-instance-uid": sop_instance,
            "dicom.sop-class-uid": sop_class,
            "dicom.calling-ae": calling,
            "source.endpoint": peer,
            "received.at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        if study:
            headers["dicom.study-instance-uid"] = study
        extra: dict[str, Any] = {"conversion": hand_over} if hand_over is not None else {}
        try:
            envelope_id = self.landing.land(
                payload, content_type=CONTENT_DICOM, source=self.settings.name, headers=headers, **extra
            )
        except TransientError as exc:
            self.counters["refused"] += 1
            log.warning(
                "dicom scp: landing failed for %s: %s", sop_instance, exc, extra={"sop_instance_uid": sop_instance}
            )
            return STATUS_OUT_OF_RESOURCES
        except PermanentError as exc:  # can never be stored (e.g. above Kafka's max_request_size): no retry
            self.counters["refused"] += 1
            log.error(
                "dicom scp: landing rejected %s: %s", sop_instance, exc, extra={"sop_instance_uid": sop_instance}
            )
            self.door.reject(
                source=self.settings.name,
                reason_code="store-refused",
                reason="dataset not stored (the message store cannot take it, e.g. too large)",
                payload=payload,
                content_type=CONTENT_DICOM,
                headers=headers,
            )
            return STATUS_PROCESSING_FAILURE
        except Exception:  # unknown: never report success; the SCU retries, the error is loud
            self.counters["errors"] += 1
            log.error("dicom scp: unexpected landing error for %s", sop_instance, exc_info=True)
            return STATUS_OUT_OF_RESOURCES
        self.counters["stored"] += 1
        log.debug("dicom scp: landed %s as %s", sop_instance, envelope_id, extra={"sop_instance_uid": sop_instance})
        if self.settings.ack == "stored":
            self.door.outcome(self.settings.name, "stored")
            return STATUS_SUCCESS
        return self._converted(payload, sop_instance, hand_over)

    def _converted(
        self, payload: bytes, sop_instance: str, hand_over: Future[Conversion | None] | None
    ) -> int | Dataset:
        """``ack: converted``: the status tells what became of the stored dataset; ``hand_over`` gets the result
        (the message store's future for the worker; :meth:`_store` resolves it with None if this fails)."""
        try:
            result = self.converter.convert(payload)
            if hand_over is not None:
                hand_over.set_result(result)
        except Exception:  # a converter bug: stored; the worker meets it too and stops loudly
            self.counters["errors"] += 1
            log.error("dicom scp: conversion for the status failed unexpectedly (%s)", sop_instance, exc_info=True)
            self.counters["failed"] += 1
            self.door.outcome(self.settings.name, "rejected")
            return self._status(STATUS_CONVERSION_FAILED, "stored; conversion failed (internal error)")
        if result.rejections:
            self.counters["failed"] += 1
            self.door.outcome(self.settings.name, "rejected")
            return self._status(STATUS_CONVERSION_FAILED, f"stored; not converted: {result.rejections[0].reason}")
        if result.filtered and not result.outputs:
            self.counters["filtered"] += 1
            self.door.outcome(self.settings.name, "filtered")
            return self._status(STATUS_NOT_A_REPORT, f"stored; not a report: {result.filtered[0].reason}")
        self.counters["converted"] += 1
        self.door.outcome(self.settings.name, "converted")
        return STATUS_SUCCESS
