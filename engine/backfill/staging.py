"""Worker-side writing: the conversion processes write the output files and dead letters themselves and hand
back only small results, and rename them into place, so the backfill's own process (the *parent*) stays nearly
idle.

::

    parent: frames (bytes) --pickle--> worker: convert -> write ``.tmp-<bundle id>.json.<pid>.<n>`` (no fsync)
                                               -> dead letters (written and synced by the worker, per task)
    parent <--pickle-- [(messages, [(bundle id, temp name)], filtered reasons, rejections)] (Done)
    parent, every commit interval (flush thread): one sync of the outputs' file system (``syncfs``), then
        the interval's renames (``os.replace`` of each temp file over ``<bundle id>.json``), split by Bundle id
        into one part per worker and done by the workers (``pool.publish_staged``), fsync the directory,
        then the checkpoint commit.

* **Order.** Workers convert and *stage* in any order; the parent collects the staged files in input order
  and splits each interval's renames so that every version of one Bundle id is in one part, in input order
  (:func:`partition`); parts of different ids commute, and one interval's renames end before the next
  interval's start. So when two versions of one report (same Bundle id) are converted by different workers,
  the later one in the archive is the file that stays, exactly as with one process; no routing of reports
  to workers is needed. The renames run in the workers because they were the parent's largest serial cost
  (~18 us of kernel time each): the parent is the one part of the backfill that does not grow with the
  worker count. They queue behind the conversion tasks already submitted, so a commit lands up to about
  one in-flight window (``inflight_per_worker`` tasks per worker, ~0.5 s) after its interval ends.
* **Durable before the commit.** The temp files' data is synced before any rename, and the renames before the
  checkpoint commit that covers them: a reader never sees a partial Bundle, and a kill at any point leaves
  only hidden temp files (removed when the next run starts) and whole outputs that the re-run overwrites.
* **One sync per commit interval**, not per file or per task: ``syncfs(2)`` runs on the parent's flush
  thread while the workers go on converting (where ``syncfs`` is missing, one fsync per staged file).
* **Dead letters** are content-addressed (``FolderDeadLetters``: the payload's SHA-256) or named by input
  position (``engine map``'s ``rejected/``), so their order does not matter: each worker writes and syncs a
  task's dead letters before it reports the task done. A deployment whose dead letters are not files
  (Kafka) gets the rejected bytes back in the result and the parent writes them (rejections are rare).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.outcomes import Conversion
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sinks.folder import _SAFE_NAME, TMP_PREFIX, fsync_dir, remove_stale_tmp, stale_tmp, sync_files
from engine.sources.base import CONTENT_DICOM, CONTENT_HL7V2, Envelope

__all__ = [
    "Done",
    "FrameJob",
    "StagedFolder",
    "Stager",
    "Staging",
    "WorkerDeadLetters",
    "envelope_for",
    "partition",
    "publish",
    "rejection_label",
]


#: One frame as the parent sends it: (path, frame index in the file, file mtime_ns, original bytes). Plain
#: tuples: they pickle several times faster than named tuples or dataclasses (this is the parent's hot path).
FrameJob = tuple[str, int, int, bytes]


class DeadLetterWriter(Protocol):
    def put(self, envelope: Envelope, payload: bytes, reason: str, error_class: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Staging:
    """What the workers write (picklable: sent once to each worker).

    ``outputs``: folder of ``<bundle id>.json``; ``sync``: make outputs durable before the checkpoint commit
    (``engine backfill``; ``engine map`` does not sync); ``dead_letters``: a picklable factory of the
    worker's dead-letter writer (e.g. ``functools.partial(FolderDeadLetters, path, deferred=True)``), or
    None to send rejected bytes back to the parent."""

    outputs: Path
    sync: bool = True
    dead_letters: Callable[[], DeadLetterWriter] | None = None


#: The small result of one frame, never Bundle bodies: (messages, [(bundle id, staged temp file name)],
#: [filtered reason], [(message number in the frame, reason, error class, original bytes when the parent must
#: dead-letter them, else None)]). A plain tuple, see :data:`FrameJob`.
Done = tuple[int, list[tuple[str, str]], list[str], list[tuple[int, str, str, bytes | None]]]


def envelope_for(path: str, index: int, mtime_ns: int, raw: bytes, label: str | None = None) -> Envelope:
    """The envelope of a backfill frame (dead letters, sinks): id ``<path>#<index>`` unless ``label``."""
    return Envelope(
        id=label or f"{path}#{index}",
        payload=raw,
        content_type=CONTENT_DICOM if raw[128:132] == b"DICM" else CONTENT_HL7V2,
        source="backfill",
        received_at=mtime_ns / 1e9,
        position=(path, index),
        headers={"input": path, "frame": str(index)},
    )


def rejection_label(path: str, index: int, n: int) -> str:
    return f"{path}#{index}" if n == 1 else f"{path}#{index}.{n}"


class Stager:
    """Worker side: converts a task's frames, writes temp files and dead letters, returns :class:`Done` s."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self.dir = os.fspath(staging.outputs)
        self.dead = staging.dead_letters() if staging.dead_letters is not None else None
        self.pid = os.getpid()
        self.seq = 0

    def run(self, convert: Callable[[bytes], Conversion], jobs: Sequence[FrameJob]) -> list[Done]:
        results: list[Done] = []
        for job in jobs:
            result = convert(job[3])
            outputs: list[tuple[str, str]] = []
            rejections: list[tuple[int, str, str, bytes | None]] = []
            for output in result.outputs:
                if not _SAFE_NAME.match(output.bundle_id):
                    reason = f"bundle id {output.bundle_id[:80]!r} is not usable as a file name"
                    rejections.append((1, reason, "PermanentError", None if self.dead else job[3]))
                    self._dead_letter(job, 1, job[3], reason, "PermanentError")
                    continue
                self.seq += 1
                tmp = f"{TMP_PREFIX}{output.bundle_id}.json.{self.pid}.{self.seq}"
                _write(f"{self.dir}/{tmp}", output.body)
                outputs.append((output.bundle_id, tmp))
            for rej in result.rejections:
                rejections.append((rej.index, rej.reason, rej.error_class, None if self.dead else rej.raw))
                self._dead_letter(job, rej.index, rej.raw, rej.reason, rej.error_class)
            results.append((result.messages, outputs, [f.reason for f in result.filtered], rejections))
        flush = getattr(self.dead, "flush", None)
        if callable(flush):
            flush()  # the task's dead letters are durable before the task is reported done
        return results

    def _dead_letter(self, job: FrameJob, n: int, raw: bytes, reason: str, error_class: str) -> None:
        if self.dead is None:
            return  # the parent writes it (the bytes go back in the result)
        path, index, mtime_ns, _ = job
        label = rejection_label(path, index, n)
        self.dead.put(envelope_for(path, index, mtime_ns, raw, label), raw, reason, error_class)


def publish(directory: str, staged: Sequence[tuple[str, str]]) -> int:
    """``os.replace`` each staged temp file over ``<bundle id>.json`` in ``directory``, in list order (the
    later version of a Bundle id is the one that stays); names relative to one directory descriptor (no path
    walk per rename). Returns the number of files published. Raises ``OSError`` (the rest stay staged: the
    next run removes them and redoes what the checkpoint does not cover)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for bundle_id, tmp in staged:
            os.replace(tmp, f"{bundle_id}.json", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    return len(staged)


def partition(staged: Sequence[tuple[str, str]], parts: int) -> list[list[tuple[str, str]]]:
    """Split ``[(bundle id, temp name)]`` into ``parts`` lists that can be renamed concurrently: every
    entry of one Bundle id lands in the same list, in its original order (the later version still wins);
    renames of different ids commute. Empty lists are dropped."""
    if parts <= 1:
        return [list(staged)] if staged else []
    lists: list[list[tuple[str, str]]] = [[] for _ in range(parts)]
    for entry in staged:
        lists[hash(entry[0]) % parts].append(entry)
    return [part for part in lists if part]


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


class StagedFolder:
    """Parent side: publishes the workers' staged files in input order (see the module docstring).

    ``stage`` records a (temp name, bundle id) pair; ``flush`` syncs (when ``sync``), renames everything
    recorded before it in order and fsyncs the directory; ``stage`` may run while ``flush`` works on the
    previous interval (``concurrent_flush``). ``on_publish(bundle_id)`` is called for each output staged
    (``engine map`` counts distinct Bundles with it)."""

    name = "folder-staged"
    concurrent_flush = True

    def __init__(self, path: Path, *, sync: bool = True, on_publish: Callable[[str], Any] | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.path)
        self.sync = sync
        self.on_publish = on_publish
        self._pending: list[tuple[str, str]] = []  # (bundle id, temp name), in input order
        #: Who renames an interval's staged files: ``renamer(directory, [(bundle id, temp name)])`` must
        #: return only when every rename is done (raising ``OSError`` otherwise) and keep the list's order
        #: among entries of one Bundle id. Default: :func:`publish` in the calling (flush) thread;
        #: ``engine.backfill.run`` hands them to the worker processes (:func:`partition`).
        self.renamer: Callable[[str, list[tuple[str, str]]], Any] = publish

    def stage(self, bundle_id: str, tmp: str) -> None:
        self.stage_all([(bundle_id, tmp)])

    def stage_all(self, staged: Sequence[tuple[str, str]]) -> None:
        """Record ``[(bundle id, temp name)]`` (a :data:`Done`'s outputs) for the next flush, in this order."""
        self._pending.extend(staged)
        if self.on_publish is not None:
            for bundle_id, _ in staged:
                self.on_publish(bundle_id)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        base = os.fspath(self.path)
        if self.sync:
            sync_files(self.path, [f"{base}/{tmp}" for _, tmp in pending])
        self.renamer(base, pending)
        if self.sync:
            fsync_dir(self.path)

    def discard(self, tmps: Sequence[str]) -> None:
        """Remove staged files that will never be published (a graceful stop)."""
        for tmp in tmps:
            with contextlib.suppress(OSError):
                os.unlink(self.path / tmp)

    def close(self) -> None:
        """Remove staged files of processes that are gone (a worker of a killed run that outlived its parent
        by a moment); everything this run staged was published or discarded by now."""
        for name in stale_tmp(self.path):  # streaming: the folder may hold millions of Bundles
            parts = name.rsplit(".", 3)
            if len(parts) == 4 and parts[1] == "json" and parts[2].isdigit() and not _alive(int(parts[2])):
                with contextlib.suppress(OSError):
                    os.unlink(self.path / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerDeadLetters(FolderDeadLetters):
    """:class:`FolderDeadLetters` (deferred) for a worker process: it leaves other processes' temp files alone
    (the parent cleaned the folder before the workers started)."""

    def __init__(self, path: str | Path) -> None:  # no stale-file sweep (see above)
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.deferred = True
        self._pending: dict[str, bytes] = {}
