"""JSON log lines that carry ids, never PHI.

Only allow-listed ``extra`` fields are emitted (envelope id, control id, SOP Instance UID, accession hash,
bundle/report ids, source, status, error class, one-line reasons produced by the mappers, counts, ports).
Messages are fixed strings from the code; report text and demographics are never passed to a logger.
Tracebacks are logged without the exception message (frames and class only), which might quote data.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback

__all__ = ["SAFE_FIELDS", "JsonFormatter", "configure_logging"]

SAFE_FIELDS = (
    "envelope_id",
    "control_id",
    "sop_uid",
    "sop_instance_uid",
    "study_instance_uid",
    "accession_hash",
    "bundle_id",
    "report_id",
    "source",
    "sink",
    "status",
    "error_class",
    "reason",
    "count",
    "attempt",
    "retry_in",
    "port",
    "path",
    "outputs",
    "dead_letters",
    "pid",
    "config",
    "topic",
    "partition",
    "offset",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in SAFE_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _exc, tb = record.exc_info
            entry["exception"] = exc_type.__name__
            entry["traceback"] = "".join(traceback.format_tb(tb)).rstrip()
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stderr as JSON (or plain text for local debugging)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("pynetdicom", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
