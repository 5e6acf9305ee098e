"""Folder inbox: picks up files atomically and lands every message in them, like every other transport.

Design: the inbox is an *ingress adapter*, not a worker source. A scanner thread lists the inbox and its
sub-folders (recursively, like ``engine map``; ``done/``, ``failed/``, ``.landed/`` and hidden folders
excepted) every ``scan_interval`` seconds and takes a file only when it looks complete:

* names starting with ``.`` or ending in ``.tmp`` / ``.part`` / ``.partial`` / ``.filepart`` are ignored
  (writers should write under such a name and rename when done, which is atomic);
* the file's (size, mtime) must be unchanged since the previous scan and its mtime older than
  ``settle_seconds``, so files still being copied in are left alone.

**One outcome per message.** A taken file is split into its messages exactly as ``engine map`` splits it
(:func:`pipelines.hl7v2.split_stream`: back-to-back messages, MLLP frames, FHS/BHS batches; bytes that are
not a message are a message of their own, which the worker rejects). Each message is landed as its own
envelope (its original bytes; with the message store all of a file's messages in one transaction, in file
order) with PHI-free headers:
``file.sha256`` (a hash of the file's path inside the inbox, never the name itself), ``message.index``
(1-based), ``message.count`` and ``hl7.control-id``. So every message gets its own store row, status and,
when rejected, its own dead letter whose sidecar names the index and control id. A DICOM file, a UTF-16
file and a log with textual ``<SB>``/``<EB>`` markers are landed whole (one envelope).

A manifest ``.landed/<token>.json`` lists the file's envelopes, then the file moves to
``.landed/<token>__<name>``. When the worker has finished every envelope of a file (the message store calls
:meth:`FolderInbox.finished`), the file moves to ``done/`` when at least one message was converted, else
to ``failed/`` (sub-folder paths are kept), with ``<name>.report.json`` beside it: one entry per message
(index, control id, envelope id, outcome ``converted``/``filtered``/``rejected``, reason, Bundle ids).
At start-up :meth:`FolderInbox.recover` settles what a crash left in ``.landed/``. A crash before the
manifest lands the file again at the next scan: at-least-once, and the outputs are idempotent. Without
the message store (Kafka raw topic as the landing) files move to ``done/`` as soon as they are landed.
Files above ``max_bytes`` and files the landing refuses for good go straight to ``failed/`` and are
counted and kept as door rejections (:class:`engine.sources.door.DoorRejects`); unreadable files are retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, PermanentError, TransientError
from engine.sinks.folder import atomic_write, fsync_dir
from engine.sources.base import CONTENT_DICOM, CONTENT_HL7V2, Landing
from engine.sources.door import DoorRejects

__all__ = ["FolderInbox", "InboxSettings", "name_hash", "split_file"]


def name_hash(name: str) -> str:
    """File names can carry patient names: headers and logs get a short SHA-256 of the name instead."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


log = logging.getLogger("engine.inbox")

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".crdownload")
LANDED, DONE, FAILED = ".landed", "done", "failed"
REPORT_SUFFIX = ".report.json"


@dataclass(frozen=True, slots=True)
class InboxSettings:
    path: Path
    settle_seconds: float = 1.0
    scan_interval: float = 0.5
    max_bytes: int = 64 * 1024 * 1024
    name: str = "inbox"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> InboxSettings:
        allowed = {"path", "settle_seconds", "scan_interval", "max_bytes"}
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError(f"sources.inbox: unknown keys {', '.join(sorted(unknown))}")
        if not data.get("path"):
            raise ConfigError("sources.inbox.path is required")
        try:
            settings = cls(
                path=Path(str(data["path"])),
                settle_seconds=float(data.get("settle_seconds", 1.0)),
                scan_interval=float(data.get("scan_interval", 0.5)),
                max_bytes=int(data.get("max_bytes", 64 * 1024 * 1024)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"sources.inbox: {exc}") from exc
        if settings.settle_seconds < 0 or settings.scan_interval <= 0 or settings.max_bytes <= 0:
            raise ConfigError("sources.inbox: settle_seconds >= 0, scan_interval > 0 and max_bytes > 0 required")
        return settings


def _content_type(payload: bytes) -> str:
    return CONTENT_DICOM if payload[128:132] == b"DICM" else CONTENT_HL7V2


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES)


def split_file(payload: bytes) -> list[bytes]:
    """The messages of an inbox file, each with its original bytes, in file order (see the module docstring)."""
    from engine._dispatch import is_dicom
    from pipelines.hl7v2 import split_stream

    if is_dicom(payload) or payload[:2] in (b"\xff\xfe", b"\xfe\xff") or b"<SB>" in payload:
        return [payload]
    chunks = split_stream(payload)
    if len(chunks) <= 1:
        return [payload]
    return [c.raw for c in chunks]


def _control_id(message: bytes) -> str:
    from engine.sources.hl7_ack import read_msh

    msh = read_msh(message)
    return msh.control_id if msh is not None else ""


class FolderInbox:
    def __init__(
        self,
        settings: InboxSettings,
        landing: Landing,
        *,
        track_completion: bool = True,
        clock: Callable[[], float] | None = None,
        lookup: Callable[[str], Any] | None = None,
        door: DoorRejects | None = None,
    ) -> None:
        import time

        self.settings = settings
        self.landing = landing
        self.track_completion = track_completion
        self._clock = clock or time.time
        # envelope id -> stored message (status, outputs, error_reason); the message store's ``get``
        self._lookup = lookup if lookup is not None else getattr(landing, "get", None)
        self.door = door or DoorRejects()
        self.root = settings.path
        for sub in (LANDED, DONE, FAILED):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._seen: dict[str, tuple[int, int]] = {}
        # held from land() until the file is in .landed/, so finished() (worker thread) cannot run in between;
        # also serialises _move (inbox and worker threads) so that a free target name stays free
        self._landing_lock = threading.RLock()
        self._waiting: dict[str, str] = {}  # envelope id -> token of its file
        self._remaining: dict[str, set[str]] = {}  # token -> envelope ids not finished yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- scanning -----------------------------------------------------------------------------------

    def _files(self) -> list[tuple[str, os.DirEntry[str]]]:
        """(path relative to the inbox, entry) of every candidate file, sub-folders included, in ``engine map``'s
        order (``os.walk`` top-down, sorted: a folder's files before its sub-folders)."""
        out: list[tuple[str, os.DirEntry[str]]] = []
        stack = [(self.root, "")]
        while stack:
            folder, prefix = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    if _ignored(entry.name):
                        continue
                    rel = f"{prefix}{entry.name}"
                    if entry.is_dir(follow_symlinks=False):
                        if not (prefix == "" and entry.name in (DONE, FAILED)):
                            stack.append((Path(entry.path), rel + "/"))
                    elif entry.is_file(follow_symlinks=False):
                        out.append((rel, entry))
        def walk_order(item: tuple[str, os.DirEntry[str]]) -> tuple[tuple[int, str], ...]:
            *folders, name = item[0].split("/")
            return (*((1, f) for f in folders), (0, name))

        return sorted(out, key=walk_order)

    def scan_once(self) -> int:
        """Land every settled file; returns how many files were landed."""
        now = self._clock()
        seen: dict[str, tuple[int, int]] = {}
        landed = 0
        for rel, entry in self._files():
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            signature = (st.st_size, st.st_mtime_ns)
            seen[rel] = signature
            settled = self._seen.get(rel) == signature and now - st.st_mtime >= self.settings.settle_seconds
            if settled and self._take(Path(entry.path), rel, st.st_size):
                landed += 1
                seen.pop(rel, None)
        self._seen = seen
        return landed

    def _take(self, path: Path, rel: str, size: int) -> bool:
        file_hash = name_hash(rel)
        if size > self.settings.max_bytes:
            log.error("inbox file too large, moved to failed/", extra={"file_hash": file_hash, "count": size})
            with contextlib.suppress(OSError), path.open("rb") as fh:
                self._door("too-large", f"file of {size} bytes exceeds max_bytes", fh.read(self.door.keep_bytes),
                           size, file_hash)  # fmt: skip
            self._move(path, self.root / FAILED / rel)
            return False
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:  # e.g. EACCES: leave it, retry at the next scan, keep scanning the others
            log.warning("inbox file cannot be read, will retry", extra={"file_hash": file_hash, "reason": str(exc)})
            return False
        messages = split_file(payload)
        with self._landing_lock:
            try:
                ids = self._land_all(messages, file_hash)
            except TransientError as exc:
                log.warning("inbox landing failed, will retry", extra={"file_hash": file_hash, "reason": str(exc)})
                return False
            except PermanentError as exc:  # the landing can never take it (e.g. above Kafka's max_request_size)
                log.error("inbox file cannot be stored, moved to failed/", extra={"file_hash": file_hash})
                self._door("store-refused", f"file not stored: {exc}", payload, len(payload), file_hash)
                self._move(path, self.root / FAILED / rel)
                return False
            entries = [
                {"index": n, "envelope_id": eid, "control_id": _control_id(m)}
                for n, (eid, m) in enumerate(zip(ids, messages, strict=True), start=1)
            ]
            token = ids[0]
            manifest = {"file": rel, "file_hash": file_hash, "messages": entries}
            if self.track_completion:
                body = json.dumps(manifest, indent=1).encode()
                atomic_write(self.root / LANDED, f"{token}.json", body)
                self._move(path, self.root / LANDED / f"{token}__{path.name}")
                self._remaining[token] = set(ids)
                self._waiting.update(dict.fromkeys(ids, token))
            else:
                self._move(path, self.root / DONE / rel)
                self._write_report(self.root / DONE / rel, file_hash, [{**e, "outcome": "stored"} for e in entries])
        log.info("inbox file landed", extra={"file_hash": file_hash, "envelope_id": token, "count": len(ids)})
        return True

    def _land_all(self, messages: list[bytes], file_hash: str) -> list[str]:
        """Land the messages in file order (ascending envelope ids, so versions of one report keep their order):
        in one transaction when the landing offers ``land_many`` (the message store), else one by one."""
        items: list[tuple[bytes, str, str, dict[str, str]]] = []
        for n, message in enumerate(messages, start=1):
            headers = {"file.sha256": file_hash, "message.index": str(n), "message.count": str(len(messages))}
            control_id = _control_id(message)
            if control_id:
                headers["hl7.control-id"] = control_id
            items.append((message, _content_type(message), self.settings.name, headers))
        land_many = getattr(self.landing, "land_many", None)
        if callable(land_many) and len(items) > 1:
            return list(land_many(items))
        return [
            self.landing.land(payload, content_type=ctype, source=source, headers=headers)
            for payload, ctype, source, headers in items
        ]

    def _door(self, code: str, reason: str, payload: bytes, size: int, file_hash: str) -> None:
        self.door.reject(
            source=self.settings.name,
            reason_code=code,
            reason=reason,
            payload=payload,
            size=size,
            content_type=_content_type(payload),
            headers={"file.sha256": file_hash},
        )

    def _move(self, src: Path, dst: Path) -> Path:
        """Rename, never over an existing file (senders reuse names; failed/ may hold the only copy)."""
        with self._landing_lock:
            dst.parent.mkdir(parents=True, exist_ok=True)
            n = 0
            target = dst
            while target.exists():
                n += 1
                target = dst.with_name(f"{dst.stem}.{n}{dst.suffix}")
            os.replace(src, target)
        fsync_dir(target.parent)
        if target.parent != src.parent:
            fsync_dir(src.parent)
        return target

    # -- completion ---------------------------------------------------------------------------------

    def finished(self, envelope_id: str, status: str, source: str) -> None:
        """Message-store listener: the worker finished ``envelope_id``; move its file on once all are done."""
        if source != self.settings.name:
            return
        with self._landing_lock:
            token = self._waiting.pop(envelope_id, None)
            if token is None:
                return
            remaining = self._remaining.get(token, set())
            remaining.discard(envelope_id)
            if not remaining:
                self._remaining.pop(token, None)
                self._settle(token)

    def _outcome(self, entry: dict[str, Any]) -> dict[str, Any]:
        stored = self._lookup(str(entry["envelope_id"])) if self._lookup is not None else None
        if stored is None:
            return {**entry, "outcome": "unknown"}
        outputs = list(getattr(stored, "outputs", []) or [])
        status = str(getattr(stored, "status", ""))
        reason = getattr(stored, "error_reason", None)
        if outputs:
            outcome = "converted"
        elif status == "failed":
            outcome = "rejected"
        else:  # finished without outputs and without a dead letter: not a report (filtered)
            outcome = "filtered"
        return {**entry, "outcome": outcome, "reason": reason, "bundles": outputs}

    def _settle(self, token: str) -> None:
        """Every envelope of the file is finished: report per message, then done/ or failed/."""
        manifest_path = self.root / LANDED / f"{token}.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        report = [self._outcome(e) for e in manifest["messages"]]
        target = DONE if any(r["outcome"] == "converted" for r in report) else FAILED
        for landed in (self.root / LANDED).glob(f"{token}__*"):
            with contextlib.suppress(FileNotFoundError):
                moved = self._move(landed, self.root / target / manifest["file"])
                self._write_report(moved, str(manifest.get("file_hash", "")), report)
        with contextlib.suppress(FileNotFoundError):
            manifest_path.unlink()

    @staticmethod
    def _write_report(file: Path, file_hash: str, messages: list[dict[str, Any]]) -> None:
        """``<file>.report.json``: per message index, control id, envelope id, outcome, reason, Bundle ids."""
        counts: dict[str, int] = {}
        for m in messages:
            counts[m["outcome"]] = counts.get(m["outcome"], 0) + 1
        body = {"file_hash": file_hash, "messages": messages, "counts": counts}
        atomic_write(file.parent, file.name + REPORT_SUFFIX, json.dumps(body, indent=1).encode() + b"\n")

    def recover(self, status_of: Callable[[str], str | None]) -> None:
        """Settle files a crash left in ``.landed/`` (``status_of`` reads the store)."""
        landed_dir = self.root / LANDED
        for manifest_path in sorted(landed_dir.glob("*.json")):
            token = manifest_path.stem
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not list(landed_dir.glob(f"{token}__*")):  # crash before the file moved: it is landed again
                manifest_path.unlink()
                continue
            ids = [str(e["envelope_id"]) for e in manifest["messages"]]
            statuses = [status_of(eid) for eid in ids]
            if all(s is None for s in statuses):  # not in the store (store replaced): land it again
                for landed in landed_dir.glob(f"{token}__*"):
                    self._move(landed, self.root / manifest["file"])
                manifest_path.unlink()
                continue
            open_ids = {eid for eid, s in zip(ids, statuses, strict=True) if s in ("received", "mapped")}
            if open_ids:
                self._remaining[token] = open_ids
                self._waiting.update(dict.fromkeys(open_ids, token))
            else:
                self._settle(token)
        for landed in sorted(landed_dir.iterdir()):  # files landed before manifests existed: one envelope
            token, sep, name = landed.name.partition("__")
            if not sep or (landed_dir / f"{token}.json").exists():
                continue
            status = status_of(token)
            if status is None:
                self._move(landed, self.root / name)
                continue
            entry = {"index": 1, "envelope_id": token, "control_id": ""}
            manifest = {"file": name, "file_hash": name_hash(name), "messages": [entry]}
            atomic_write(landed_dir, f"{token}.json", json.dumps(manifest, indent=1).encode())
            if status in ("received", "mapped"):
                self._remaining[token] = {token}
                self._waiting[token] = token
            else:
                self._settle(token)

    # -- lifecycle ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except OSError as exc:
                log.warning("inbox scan failed", extra={"reason": str(exc)[:200]})
            self._stop.wait(self.settings.scan_interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="inbox", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
