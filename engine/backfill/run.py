"""The backfill loop shared by ``engine backfill`` and ``engine map``.

::

    files (walked, sorted) -> frames (streaming readers, formats.py) -> exact-duplicate check (checkpoint)
      -> batches -> process pool (pool.py) -> results in submission order -> sinks.write / dead letters
      -> every ``flush_every`` messages or ``flush_seconds``: sinks.flush() -> checkpoint.commit()

* **Bounded memory.** At most ``inflight`` batches (``batch`` frames each) exist at any time; reading stops
  while the oldest batch is not consumed. A slow sink (a Kafka broker waiting for ``acks=all``, a slow disk)
  blocks the consumer, so reading and converting stop too: back-pressure, no unbounded buffer.
* **Order.** Results are consumed in input order, so a corrected report is never written before the
  preliminary that precedes it in the archive (per report identifier, and globally).
* **Exactly the same output after a kill.** Outputs are written before the checkpoint commit that covers
  them; a re-run skips committed frames and re-converts the rest; Bundle ids are deterministic and sinks
  overwrite, so the output set is identical.
* **Outcomes.** Each message is converted (outputs), filtered (counted by reason) or rejected (dead letter
  with its original bytes, counted by reason); a frame whose message key was seen before is a duplicate.
  A file that holds no HL7 v2 message start and is not DICOM is *skipped*: one outcome for the whole file
  (counted by reason in ``skipped``, not a message, not a dead letter).

**Who writes.** With ``Options.staging`` (folder outputs: ``engine backfill`` with ``sinks.folder`` only,
``engine map --out``) the worker processes write the Bundles as temp files and the dead letters themselves
and return small results; this process only reads frames, checks duplicates, publishes the staged files in
input order (rename) and commits (:mod:`engine.backfill.staging`). Sinks that need one ordered writer (Kafka,
the FHIR server models, stdout) keep the classic path: whole conversions come back in submission order and
this process writes them, which keeps every version of a report in archive order for them too.
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from engine.backfill.checkpoint import Checkpoint
from engine.backfill.formats import FORMATS, Frame, InputFile, LogFormat, frames_of, message_key
from engine.backfill.pool import convert_batch, make_executor, publish_staged, stage_batch
from engine.backfill.progress import Progress, Tally
from engine.backfill.staging import (
    Done,
    FrameJob,
    StagedFolder,
    Staging,
    envelope_for,
    partition,
    rejection_label,
)
from engine.outcomes import Conversion
from engine.sinks.base import DeadLetterSink, Sink
from engine.sources.base import Envelope
from pipelines.context import MappingContext

__all__ = ["SMALL_INPUT", "Interrupted", "Options", "auto_workers", "run_backfill"]

#: Inputs below this many bytes are converted in the command's own process by default: starting worker
#: processes costs more than it saves.
SMALL_INPUT = 2 * 1024 * 1024


def auto_workers(requested: int | None, total_bytes: int) -> int:
    """``requested`` when given, else every core, or 0 (in process) for a small input."""
    if requested is not None:
        return max(0, requested)
    return 0 if total_bytes < SMALL_INPUT else (os.cpu_count() or 1)


class Interrupted(Exception):
    """SIGTERM/SIGINT: consumed work was flushed and committed; the rest is left for the next run."""


@dataclass(frozen=True, slots=True)
class Options:
    workers: int = 0  # 0: convert in this process
    batch: int = 256  # frames per task (per-task costs in this process amortised)
    batch_bytes: int = 4 << 20  # or fewer frames when they are large
    inflight_per_worker: int = 4  # bounded queue: batches waiting or converting per worker
    flush_every: int = 4000  # messages between sink flushes + checkpoint commits
    flush_seconds: float = 2.0
    limit: int = 16 * 1024 * 1024  # largest frame (MappingContext.max_message_bytes)
    model: str = "document"
    formats: tuple[LogFormat, ...] = FORMATS
    staging: Staging | None = None  # workers write the outputs (engine.backfill.staging); else this process


@dataclass(slots=True)
class _Item:
    file: InputFile
    index: int
    raw: bytes | None  # None: a duplicate of ``first``
    first: str | None = None
    eof: bool = False  # last frame of its file
    size: int = 0  # bytes of the frame in the file
    skip: str | None = None  # the whole file is skipped, with this reason


def _live(item: _Item) -> bool:
    return item.raw is not None and item.first is None and item.skip is None


_Batch = tuple[list[_Item], "Future[list[Conversion]] | Future[list[Done]]"]


class _Loop:
    def __init__(
        self,
        context: MappingContext,
        sinks: Sequence[Sink],
        dead_letters: DeadLetterSink,
        checkpoint: Checkpoint,
        progress: Progress | None,
        options: Options,
        tally: Tally,
        published: Callable[[str], Any] | None = None,
    ) -> None:
        self.context, self.sinks, self.dead_letters = context, list(sinks), dead_letters
        self.checkpoint, self.progress, self.options, self.tally = checkpoint, progress, options, tally
        self.staged: StagedFolder | None = None
        if options.staging is not None:
            self.staged = StagedFolder(options.staging.outputs, sync=options.staging.sync, on_publish=published)
        self.record = getattr(dead_letters, "record", None)  # engine map lists what workers dead-lettered
        self.marks: dict[Path, tuple[InputFile, int, bool]] = {}
        self.since_flush = 0
        self.last_flush = time.monotonic()
        self.stop = False
        concurrent = all(getattr(x, "concurrent_flush", False) for x in self._flushing()) and (
            getattr(dead_letters, "concurrent_flush", False) or not hasattr(dead_letters, "flush")
        )
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="backfill-flush") if concurrent else None
        self._commit: Future[None] | None = None

    # -- reading ------------------------------------------------------------------------------------

    def items(self, files: Sequence[InputFile]) -> Iterator[_Item]:
        for f in files:
            upto, finished = self.checkpoint.done_upto(f)
            if finished:
                continue
            last: _Item | None = None
            try:
                frames: Iterator[Frame] = frames_of(f.path, self.options.limit, self.options.formats)
                for frame in frames:
                    if frame.index <= upto:
                        continue
                    if last is not None:
                        yield last
                        if self.stop:
                            return
                    if frame.skip is not None:
                        last = _Item(f, frame.index, None, skip=frame.skip, size=f.size)
                        continue
                    last = _Item(f, frame.index, frame.raw, size=len(frame.raw))
            except OSError as exc:
                if last is not None:  # frames before the read error stand; the error is the next frame
                    yield last
                index = last.index + 1 if last is not None else upto + 1
                last = _Item(f, index, b"", first=f"cannot read file: {exc.strerror or type(exc).__name__}")
            if last is None:
                last = _Item(f, upto, None, first="", eof=True)  # nothing (more) in this file
            last.eof = True
            yield last

    def batches(self, files: Sequence[InputFile]) -> Iterator[list[_Item]]:
        batch: list[_Item] = []
        append = batch.append
        size = 0
        most, most_bytes = self.options.batch, self.options.batch_bytes
        for item in self.items(files):
            append(item)
            size += item.size
            if len(batch) >= most or size >= most_bytes:
                yield self._dedupe(batch)
                batch, size = [], 0
                append = batch.append
        if batch:
            yield self._dedupe(batch)

    def _dedupe(self, batch: list[_Item]) -> list[_Item]:
        """Claim the message keys of the batch's live frames at once (one checkpoint call per task)."""
        live = [it for it in batch if it.raw is not None and it.first is None and it.skip is None]
        names: dict[Path, str] = {}  # one ``str(path)`` per file, not per frame
        keys: list[tuple[bytes, str]] = []
        for it in live:
            path = it.file.path
            name = names.get(path) or names.setdefault(path, str(path))
            keys.append((message_key(it.raw), f"{name}#{it.index}"))  # type: ignore[arg-type]
        firsts = self.checkpoint.claim(keys)
        for it, first in zip(live, firsts, strict=True):
            if first is not None:
                it.raw, it.first = None, first
        return batch

    # -- consuming ----------------------------------------------------------------------------------

    def consume(self, items: list[_Item], results: list[Conversion] | list[Done]) -> None:
        it_results: Iterator[Conversion | Done] = iter(results)
        tally, marks = self.tally, self.marks
        for item in items:
            if item.skip is None and item.first is None and item.raw is not None:  # converted: the usual case
                result = next(it_results)
                if isinstance(result, tuple):
                    self._done(item, result)
                else:
                    self._outcome(item, result)
            elif item.skip is not None:
                self.tally.skip(item.skip, str(item.file.path))
                if self.record is not None:
                    self.record(str(item.file.path), f"skipped: {item.skip}", "skipped")
            elif item.raw is None:
                if item.first:  # "" marks an empty end-of-file item
                    self.tally.inputs += 1
                    self.tally.duplicates += 1
            else:  # unreadable file
                assert item.first is not None
                self.tally.inputs += 1
                self._reject(item, 1, item.first, "ReadError", b"")
            tally.bytes += item.size
            if item.eof:
                tally.files += 1
                marks[item.file.path] = (item.file, item.index, True)
        last = items[-1] if items else None
        if last is not None and not last.eof:  # watermark of a file that goes on in the next batch
            marks[last.file.path] = (last.file, last.index, False)
        if self.progress is not None:
            self.progress.update(tally)

    def _outcome(self, item: _Item, result: Conversion) -> None:
        self.tally.inputs += result.messages
        self.since_flush += result.messages
        assert item.raw is not None
        envelope = self._envelope(item, item.raw)
        if result.outputs:
            self.tally.converted += result.messages - len(result.rejections) - len(result.filtered)
        for output in result.outputs:
            for sink in self.sinks:
                sink.write(output, envelope)
            self.tally.outputs += 1
        for filtered in result.filtered:
            self.tally.filter(filtered.reason)
        for rej in result.rejections:
            self._reject(item, rej.index, rej.reason, rej.error_class, rej.raw)

    def _done(self, item: _Item, done: Done) -> None:
        """A frame converted and written by a worker (staging): publish its staged files, count it."""
        assert self.staged is not None
        messages, outputs, filtered, rejections = done
        tally = self.tally
        tally.inputs += messages
        self.since_flush += messages
        if outputs:
            tally.converted += messages - len(rejections) - len(filtered)
            tally.outputs += len(outputs)
            self.staged.stage_all(outputs)
        for reason in filtered:
            tally.filter(reason)
        for n, reason, error_class, raw in rejections:
            if raw is not None:  # the workers do not write this deployment's dead letters
                self._reject(item, n, reason, error_class, raw)
                continue
            self.tally.reject(reason)
            if self.record is not None:
                self.record(rejection_label(str(item.file.path), item.index, n), reason, error_class)

    def _reject(self, item: _Item, n: int, reason: str, error_class: str, raw: bytes) -> None:
        self.tally.reject(reason)
        label = rejection_label(str(item.file.path), item.index, n)
        self.dead_letters.put(self._envelope(item, raw, label), raw, reason, error_class)

    def _envelope(self, item: _Item, raw: bytes, label: str | None = None) -> Envelope:
        return envelope_for(str(item.file.path), item.index, item.file.mtime_ns, raw, label)

    def _flushing(self) -> list[Any]:
        return [self.staged] if self.options.staging is not None else list(self.sinks)

    def _flush_and_commit(self, marks: list[tuple[InputFile, int, bool]], counts: dict[str, Any]) -> None:
        for sink in self._flushing():
            sink.flush()
        flush = getattr(self.dead_letters, "flush", None)
        if callable(flush):
            flush()
        self.checkpoint.commit(marks, counts)

    def maybe_commit(self, force: bool = False) -> None:
        """Flush the sinks, then commit the checkpoint for everything consumed so far. With sinks that allow
        it (``concurrent_flush``) this runs on a background thread while reading and converting go on; one
        flush at a time, and the loop waits for it when ``4 * flush_every`` messages piled up meanwhile."""
        o = self.options
        if self._commit is not None and (force or self._commit.done() or self.since_flush >= 4 * o.flush_every):
            self._commit.result()  # re-raises a failure of the background flush
            self._commit = None
        due = self.since_flush >= o.flush_every or time.monotonic() - self.last_flush >= o.flush_seconds
        if not (force or due) or not self.marks or self._commit is not None:
            return
        marks, counts = list(self.marks.values()), self.tally.as_dict()
        self.marks.clear()
        self.since_flush = 0
        self.last_flush = time.monotonic()
        if self._flusher is None:
            self._flush_and_commit(marks, counts)
            return
        self._commit = self._flusher.submit(self._flush_and_commit, marks, counts)
        if force:
            self._commit.result()
            self._commit = None

    # -- driving ------------------------------------------------------------------------------------

    def run(self, files: Sequence[InputFile]) -> None:
        o = self.options
        executor = make_executor(o.workers, self.context, o.model, o.staging)
        if self.staged is not None and o.workers > 0:
            self.staged.renamer = functools.partial(_rename_in_workers, executor, o.workers)
        pending: collections.deque[_Batch] = collections.deque()
        limit = max(1, o.workers) * o.inflight_per_worker
        try:
            for batch in self.batches(files):
                pending.append((batch, self._submit(executor, batch)))
                while len(pending) >= limit or (pending and pending[0][1].done()):
                    items, future = pending.popleft()
                    self.consume(items, future.result())
                    self.maybe_commit()
                if self.stop:
                    break
            while pending:
                items, future = pending.popleft()
                self.consume(items, future.result())
                self.maybe_commit()
            self.maybe_commit(force=True)
        finally:
            staging = self.staged is not None
            executor.shutdown(wait=staging or not self.stop, cancel_futures=True)
            if staging:
                self._discard(pending)
            if self._flusher is not None:
                self._flusher.shutdown(wait=True)
            if staging and not self.stop:
                self.staged.close()  # type: ignore[union-attr]

    def _submit(self, executor: Any, batch: list[_Item]) -> Future[Any]:
        if self.options.staging is None:
            return executor.submit(convert_batch, [it.raw for it in batch if _live(it)])  # type: ignore[no-any-return]
        names: dict[Path, str] = {}  # one str per file: pickled once per task
        jobs: list[FrameJob] = []
        for it in batch:
            if it.raw is not None and it.first is None and it.skip is None:
                path = it.file.path
                name = names.get(path) or names.setdefault(path, str(path))
                jobs.append((name, it.index, it.file.mtime_ns, it.raw))
        return executor.submit(stage_batch, jobs)  # type: ignore[no-any-return]

    def _discard(self, pending: collections.deque[_Batch]) -> None:
        """After a stop or a failure: staged files of results that were never consumed are removed."""
        assert self.staged is not None
        for _, future in pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                results: list[Done] = future.result()  # type: ignore[assignment]
                self.staged.discard([tmp for done in results for _, tmp in done[1]])


def _rename_in_workers(executor: Executor, workers: int, directory: str, staged: list[tuple[str, str]]) -> None:
    """The flush thread's renames (:attr:`StagedFolder.renamer`), done by the worker processes in their own output
    folder (``directory`` is the same folder): one task per worker, each holding every
    version of its Bundle ids in input order (:func:`engine.backfill.staging.partition`). Returns when all
    are done; a failed rename raises (the flush fails, nothing is committed, the next run redoes it). Flushes
    run one at a time, so one interval's renames never overtake the previous interval's.

    Why the workers: renames are the parent's largest serial cost (~18 us of kernel time each, in input
    order), and the parent is the one part of the backfill that does not grow with the worker count."""
    futures = [executor.submit(publish_staged, part) for part in partition(staged, workers)]
    for future in futures:
        future.result()


def run_backfill(
    files: Sequence[InputFile],
    context: MappingContext,
    sinks: Sequence[Sink],
    dead_letters: DeadLetterSink,
    checkpoint: Checkpoint,
    *,
    options: Options | None = None,
    progress: Progress | None = None,
    handle_signals: bool = True,
    published: Callable[[str], Any] | None = None,
) -> Tally:
    """Convert every frame of ``files`` (see the module docstring); returns the job's cumulative tally
    (a resumed job includes what earlier runs committed). Raises :class:`Interrupted` after a graceful
    stop (SIGTERM/SIGINT), with everything consumed flushed and committed. With ``options.staging`` the
    workers write the outputs (``sinks`` are then not written to); ``published(bundle_id)`` is called for
    each output they staged, in input order."""
    opts = options or Options(limit=context.max_message_bytes)
    stored = checkpoint.counts()
    tally = Tally.from_dict(stored) if stored else Tally()
    loop = _Loop(context, sinks, dead_letters, checkpoint, progress, opts, tally, published)
    if progress is not None:
        progress.update(tally)  # the baseline: a resumed job's rate counts this run only
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.stop = True

    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        loop.run(files)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if progress is not None:
            progress.close()
    if loop.stop:
        raise Interrupted(f"stopped after {tally.inputs} messages; run the same command again to continue")
    checkpoint.finish(tally.as_dict())
    return tally
