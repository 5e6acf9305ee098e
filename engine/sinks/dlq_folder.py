"""Dead letters in a folder: the failed message's original bytes plus a JSON sidecar (no PHI).

File names are the SHA-256 of the dead-lettered bytes (``<sha256>.hl7`` / ``.dcm`` / ``.bin`` and
``<sha256>.json``), so a message dead-lettered again after a crash or a replay overwrites its own entry
instead of duplicating it. The sidecar holds the reason (one PHI-free line from the mapper), error
class, source, envelope id, content type, PHI-free headers and times; when a FHIR server refused the output,
also ``details`` with the HTTP status and the server's OperationOutcome (whose diagnostics may quote values: the
folder holds the original message anyway and is protected like the message store). Both files are written
atomically and the directory is fsynced before ``put`` returns.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.sinks.folder import atomic_write, fsync_dir, remove_stale_tmp, write_batch
from engine.sources.base import CONTENT_DICOM, CONTENT_HL7V2, Envelope

__all__ = ["FolderDeadLetters"]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extension(payload: bytes, content_type: str) -> str:
    if payload[128:132] == b"DICM" or content_type == CONTENT_DICOM:
        return ".dcm"
    if payload.lstrip()[:3] in (b"MSH", b"FHS", b"BHS") or content_type == CONTENT_HL7V2:
        return ".hl7"
    return ".bin"


class FolderDeadLetters:
    name = "dlq-folder"
    concurrent_flush = True  # ``put`` (deferred) may run while ``flush`` writes the previous batch

    def __init__(self, path: str | Path, *, deferred: bool = False) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.path)
        self.deferred = deferred
        self._pending: dict[str, bytes] = {}

    def put(
        self, envelope: Envelope, payload: bytes, reason: str, error_class: str, details: dict[str, Any] | None = None
    ) -> None:
        """``details``: what the failing sink adds (the FHIR server's OperationOutcome), kept in the sidecar."""
        digest = hashlib.sha256(payload).hexdigest()
        data_name = digest + _extension(payload, envelope.content_type)
        sidecar = {
            "reason": reason,
            "error_class": error_class,
            "source": envelope.source,
            "envelope_id": envelope.id,
            "content_type": envelope.content_type,
            "payload_file": data_name,
            "payload_sha256": digest,
            "payload_bytes": len(payload),
            "received_at": _iso(envelope.received_at),
            "failed_at": _iso(datetime.now(UTC).timestamp()),
            "headers": dict(envelope.headers),
        }
        if details:
            sidecar["details"] = details
        body = json.dumps(sidecar, indent=2, sort_keys=True).encode() + b"\n"
        if self.deferred:
            self._pending[data_name] = payload
            self._pending[f"{digest}.json"] = body
            return
        atomic_write(self.path, data_name, payload, sync_dir=False)
        atomic_write(self.path, f"{digest}.json", body, sync_dir=False)
        fsync_dir(self.path)

    def flush(self) -> None:
        """Make every deferred dead letter durable (one sync for the batch)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}  # puts made meanwhile go to the next batch
        try:
            write_batch(self.path, list(pending.items()))
        except BaseException:
            self._pending = {**pending, **self._pending}
            raise

    def healthy(self) -> bool:
        return self.path.is_dir() and os.access(self.path, os.W_OK)

    def close(self) -> None:
        return None
