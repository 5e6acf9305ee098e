"""DICOM C-STORE SCP (pynetdicom 3): structured reports in, persist before answering success.

:class:`StoreScp` accepts the SR storage SOP classes, Key Object Selection, Encapsulated PDF and
Encapsulated CDA (plus Verification, so ``echoscu`` works) with the uncompressed transfer syntaxes
(implicit/explicit little endian, deflated explicit little endian, explicit big endian). For each
C-STORE request the handler lands ``event.encoded_dataset()``, the dataset exactly as the peer sent it
with a DICOM Part 10 preamble and file meta information, and answers:

* ``0x0000`` Success only after ``landing.land(...)`` returned;
* ``0xA700`` Out of Resources when the landing raised TransientError (or failed unexpectedly), so the
  SCU retries later;
* ``0xC210`` Cannot Understand when the dataset cannot be decoded (nothing is landed).
* ``0x0110`` Processing Failure when the landing raised PermanentError (it can never store this dataset,
  e.g. larger than Kafka's ``max_request_size``), so the SCU does not resend it forever.

An optional allow-list of calling AE titles rejects other associations; TLS is optional. pynetdicom's
identifier logging (``LOG_REQUEST_IDENTIFIERS``/``LOG_RESPONSE_IDENTIFIERS``) and its standard
PDU/DIMSE log handlers are switched off, and its logger is kept at WARNING unless configured otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import build_context
from pynetdicom.transport import ThreadedAssociationServer

from engine.errors import PermanentError, TransientError
from engine.sources.base import CONTENT_DICOM, Landing
from engine.sources.listener_settings import TlsSettings

__all__ = [
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_PROCESSING_FAILURE",
    "STATUS_SUCCESS",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "VERIFICATION_SOP_CLASS",
    "ScpSettings",
    "StoreScp",
]

log = logging.getLogger("engine.sources.dicom_scp")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_PROCESSING_FAILURE = 0x0110  # PS3.7 C.4.2: a failure, not "retry later"

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


def _ae_title(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 16 or "\\" in value:
        raise ValueError(f"{section}.{key}: expected an AE title of 1 to 16 characters without '\\', got {value!r}")
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{section}.{key}: AE titles are printable ASCII, got {value!r}")
    return value.strip()


@dataclasses.dataclass(frozen=True, slots=True)
class ScpSettings:
    """Settings of the C-STORE SCP (``sources.dicom`` in the config)."""

    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "ENGINE"
    allowed_calling_aes: tuple[str, ...] = ()  # empty: any calling AE title
    max_pdu: int = 65536  # 0: unlimited
    tls: TlsSettings | None = None
    name: str = "dicom"  # source name recorded with each landed dataset

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> ScpSettings:
        section = "dicom"
        if not isinstance(d, Mapping):
            raise ValueError(f"{section}: expected a mapping, got {type(d).__name__}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in allowed)
        if unknown:
            raise ValueError(f"{section}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        kw: dict[str, Any] = {}
        if "host" in d:
            if not isinstance(d["host"], str) or not d["host"].strip():
                raise ValueError(f"{section}.host: expected a non-empty string, got {d['host']!r}")
            kw["host"] = d["host"]
        for key, low, high in (("port", 0, 65535), ("max_pdu", 0, 2**32 - 1)):
            if key in d:
                value = d[key]
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise ValueError(f"{section}.{key}: expected an integer between {low} and {high}, got {value!r}")
                kw[key] = value
        if "ae_title" in d:
            kw["ae_title"] = _ae_title(section, "ae_title", d["ae_title"])
        if d.get("allowed_calling_aes") is not None:
            aes = d["allowed_calling_aes"]
            if isinstance(aes, str) or not isinstance(aes, list | tuple):
                raise ValueError(f"{section}.allowed_calling_aes: expected a list of AE titles, got {aes!r}")
            kw["allowed_calling_aes"] = tuple(_ae_title(section, "allowed_calling_aes", a) for a in aes)
        if d.get("tls") is not None:
            kw["tls"] = TlsSettings.from_mapping(d["tls"], f"{section}.tls")
        if "name" in d:
            if not isinstance(d["name"], str) or not d["name"].strip():
                raise ValueError(f"{section}.name: expected a non-empty string, got {d['name']!r}")
            kw["name"] = d["name"]
        return cls(**kw)


class StoreScp:
    """Persist-before-success C-STORE SCP running in pynetdicom's server threads."""

    def __init__(self, settings: ScpSettings, landing: Landing) -> None:
        self.settings = settings
        self.landing = landing
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._port = 0
        self.counters: dict[str, int] = dict.fromkeys(("stored", "refused", "undecodable", "errors"), 0)
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
        if self.settings.allowed_calling_aes:
            ae.require_calling_aet = list(self.settings.allowed_calling_aes)
        contexts = [build_context(uid, list(TRANSFER_SYNTAXES)) for uid in STORAGE_SOP_CLASSES]
        contexts.append(build_context(VERIFICATION_SOP_CLASS))
        server = ae.start_server(
            (self.settings.host, self.settings.port),
            block=False,
            ssl_context=ssl_ctx,
            evt_handlers=[(evt.EVT_C_STORE, self._on_c_store)],
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

    def _on_c_store(self, event: evt.Event) -> int:
        with self._idle:
            self._in_flight += 1
        try:
            return self._store(event)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _store(self, event: evt.Event) -> int:
        request = event.request
        assert isinstance(request, C_STORE)
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        requestor = event.assoc.requestor
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
                requestor.ae_title,
                exc.__class__.__name__,
                extra={"sop_instance_uid": sop_instance},
            )
            return STATUS_CANNOT_UNDERSTAND
        headers = {
            "dicom.sop-instance-uid": sop_instance,
            "dicom.sop-class-uid": sop_class,
            "dicom.calling-ae": str(requestor.ae_title).strip(),
            "source.endpoint": f"{requestor.address}:{requestor.port}",
            "received.at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        if study:
            headers["dicom.study-instance-uid"] = study
        try:
            envelope_id = self.landing.land(
                payload, content_type=CONTENT_DICOM, source=self.settings.name, headers=headers
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
            return STATUS_PROCESSING_FAILURE
        except Exception:  # unknown: never report success; the SCU retries, the error is loud
            self.counters["errors"] += 1
            log.error("dicom scp: unexpected landing error for %s", sop_instance, exc_info=True)
            return STATUS_OUT_OF_RESOURCES
        self.counters["stored"] += 1
        log.debug("dicom scp: landed %s as %s", sop_instance, envelope_id, extra={"sop_instance_uid": sop_instance})
        return STATUS_SUCCESS
