"""Folder inbox: picks up files atomically and lands them, like every other transport, in the Landing.

Design: the inbox is an *ingress adapter*, not a worker source. A scanner thread lists the inbox every
``scan_interval`` seconds and takes a file only when it looks complete:

* names starting with ``.`` or ending in ``.tmp`` / ``.part`` / ``.partial`` / ``.filepart`` are ignored
  (writers should write under such a name and rename when done, which is atomic);
* the file's (size, mtime) must be unchanged since the previous scan and its mtime older than
  ``settle_seconds``, so files still being copied in are left alone.

A taken file is read, landed (``Landing.land`` commits durably) and then moved, still with its name, to
``.landed/<envelope id>__<name>``. When the worker finishes the envelope, the message store calls
:meth:`FolderInbox.finished`, which moves it to ``done/`` (published) or ``failed/`` (dead-lettered,
the reason is in the dead letters). At start-up :meth:`FolderInbox.recover` settles files left in
``.landed/`` by a crash (finished => moved on, unfinished => left for the worker). A crash between
landing and the first move lands the file again at the next scan: at-least-once, and the outputs are
idempotent. Without the message store (Kafka raw topic as the landing), files move to ``done/`` as soon
as they are landed. Files above ``max_bytes``, and files the landing rejects for good
(:class:`engine.errors.PermanentError`), go straight to ``failed/``; a file that cannot be read is retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, PermanentError, TransientError
from engine.sinks.folder import fsync_dir
from engine.sources.base import CONTENT_DICOM, CONTENT_HL7V2, Landing

__all__ = ["FolderInbox", "InboxSettings", "name_hash"]


def name_hash(name: str) -> str:
    """File names can carry patient names: headers and logs get a short SHA-256 of the name instead."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


log = logging.getLogger("engine.inbox")

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".crdownload")
LANDED, DONE, FAILED = ".landed", "done", "failed"


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


class FolderInbox:
    def __init__(
        self,
        settings: InboxSettings,
        landing: Landing,
        *,
        track_completion: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.settings = settings
        self.landing = landing
        self.track_completion = track_completion
        self._clock = clock or time.time
        self.root = settings.path
        for sub in (LANDED, DONE, FAILED):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._seen: dict[str, tuple[int, int]] = {}
        # held from land() until the file is in .landed/, so finished() (worker thread) cannot run in between;
        # also serialises _move (inbox and worker threads) so that a free target name stays free
        self._landing_lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- scanning -----------------------------------------------------------------------------------

    def scan_once(self) -> int:
        """Land every settled file; returns how many were landed."""
        now = self._clock()
        seen: dict[str, tuple[int, int]] = {}
        landed = 0
        with os.scandir(self.root) as entries:
            candidates = sorted((e for e in entries if e.is_file(follow_symlinks=False)), key=lambda e: e.name)
        for entry in candidates:
            if _ignored(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            signature = (st.st_size, st.st_mtime_ns)
            seen[entry.name] = signature
            settled = self._seen.get(entry.name) == signature and now - st.st_mtime >= self.settings.settle_seconds
            if settled and self._take(Path(entry.path), st.st_size):
                landed += 1
                seen.pop(entry.name, None)
        self._seen = seen
        return landed

    def _take(self, path: Path, size: int) -> bool:
        if size > self.settings.max_bytes:
            log.error(
                "inbox file too large, moved to failed/", extra={"file_hash": name_hash(path.name), "count": size}
            )
            self._move(path, self.root / FAILED / path.name)
            return False
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:  # e.g. EACCES: leave it, retry at the next scan, keep scanning the others
            log.warning(
                "inbox file cannot be read, will retry",
                extra={"file_hash": name_hash(path.name), "reason": str(exc)[:200]},
            )
            return False
        with self._landing_lock:
            try:
                envelope_id = self.landing.land(
                    payload,
                    content_type=_content_type(payload),
                    source=self.settings.name,
                    headers={"file.sha256": name_hash(path.name)},
                )
            except TransientError as exc:
                log.warning(
                    "inbox landing failed, will retry",
                    extra={"file_hash": name_hash(path.name), "reason": str(exc)[:200]},
                )
                return False
            except PermanentError as exc:  # the landing can never take it (e.g. above Kafka's max_request_size)
                log.error(
                    "inbox file cannot be stored, moved to failed/",
                    extra={"file_hash": name_hash(path.name), "reason": str(exc)[:200]},
                )
                self._move(path, self.root / FAILED / path.name)
                return False
            if self.track_completion:
                self._move(path, self.root / LANDED / f"{envelope_id}__{path.name}")
            else:
                self._move(path, self.root / DONE / path.name)
        log.info("inbox file landed", extra={"file_hash": name_hash(path.name), "envelope_id": envelope_id})
        return True

    def _move(self, src: Path, dst: Path) -> None:
        """Rename, never over an existing file (senders reuse names; failed/ may hold the only copy)."""
        with self._landing_lock:
            n = 0
            target = dst
            while target.exists():
                n += 1
                target = dst.with_name(f"{dst.stem}.{n}{dst.suffix}")
            os.replace(src, target)
        fsync_dir(dst.parent)
        if dst.parent != src.parent:
            fsync_dir(src.parent)

    # -- completion ---------------------------------------------------------------------------------

    def finished(self, envelope_id: str, status: str, source: str) -> None:
        """Message-store listener: the worker finished ``envelope_id``; move its file on."""
        if source != self.settings.name:
            return
        target = DONE if status in ("published", "filtered") else FAILED  # filtered: not a report, no failure
        with self._landing_lock:
            for landed in (self.root / LANDED).glob(f"{envelope_id}__*"):
                name = landed.name.split("__", 1)[1]
                with contextlib.suppress(FileNotFoundError):
                    self._move(landed, self.root / target / name)

    def recover(self, status_of: Callable[[str], str | None]) -> None:
        """Settle files a crash left in ``.landed/`` (``status_of`` reads the store)."""
        for landed in sorted((self.root / LANDED).iterdir()):
            envelope_id, sep, name = landed.name.partition("__")
            if not sep:
                continue
            status = status_of(envelope_id)
            if status is None:  # not in the store (store replaced): land it again
                self._move(landed, self.root / name)
            elif status in ("published", "failed", "filtered"):
                self.finished(envelope_id, status, self.settings.name)

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
