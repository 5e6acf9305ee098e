"""Conversion in worker processes: a :class:`concurrent.futures.ProcessPoolExecutor` whose workers each hold
one :class:`engine.convert.Converter` (built once by the pool initializer), fed with batches of frames.

Batches (tens of frames) amortise the inter-process hand-over; the caller keeps a bounded number of batches
in flight and consumes results in submission order, which keeps every report's versions in input order and
bounds memory. ``workers=0`` converts in the calling process (same interface, no pool).

:func:`convert_batch` returns whole :class:`Conversion` s (Bundle bodies included) to the caller, which
writes them (the service; backfill sinks that need the parent: Kafka, FHIR server, stdout);
:func:`stage_batch` has the worker write the outputs itself and return small results
(:mod:`engine.backfill.staging`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from engine.backfill.staging import Done, FrameJob, Stager, Staging, publish
from engine.convert import Converter
from engine.outcomes import Conversion, Filtered
from pipelines.context import MappingContext

__all__ = ["InlineExecutor", "convert_batch", "make_executor", "publish_staged", "stage_batch"]

_converter: Converter | None = None
_stager: Stager | None = None


def _watch_parent(pid: int) -> None:
    """A worker whose backfill process died (SIGKILL, OOM killer) exits instead of waiting forever on its
    task queue (the pool's queues never report EOF to a worker that holds both pipe ends)."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            continue


def _die_with_forkserver() -> None:
    """Linux: SIGKILL this worker the moment its parent (the forkserver, which exits as soon as the backfill
    process is gone) dies, so that a killed backfill leaves no worker writing temp files while the next run
    starts. Elsewhere :func:`_watch_parent` alone (within half a second)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def _init(context: MappingContext, model: str, parent: int | None = None, staging: Staging | None = None) -> None:
    global _converter, _stager
    if parent is not None:
        _die_with_forkserver()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the parent stops us
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    _converter = Converter(context, model)
    _stager = Stager(staging) if staging is not None else None


def convert_batch(frames: Sequence[bytes]) -> list[Conversion]:
    """Convert each frame; filtered outcomes drop their bytes (never dead-lettered, so never shipped back)."""
    assert _converter is not None, "pool worker not initialised"
    results: list[Conversion] = []
    for raw in frames:
        result = _converter.convert(raw)
        if result.filtered:
            result.filtered = [Filtered(f.index, f.reason, b"", f.category) for f in result.filtered]
        results.append(result)
    return results


def stage_batch(jobs: Sequence[FrameJob]) -> list[Done]:
    """Convert each frame and write its outputs as temp files (and its dead letters) in this process."""
    assert _converter is not None and _stager is not None, "pool worker not initialised for staging"
    return _stager.run(_converter.convert, jobs)


def publish_staged(staged: Sequence[tuple[str, str]]) -> int:
    """Rename staged temp files over ``<bundle id>.json`` in this worker's output folder, in list order
    (:func:`engine.backfill.staging.publish`; one part of :func:`engine.backfill.staging.partition`)."""
    assert _stager is not None, "pool worker not initialised for staging"
    return publish(_stager.dir, staged)


class InlineExecutor(Executor):
    """Runs each task at submit time in the calling process (``--workers 0``)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def make_executor(workers: int, context: MappingContext, model: str, staging: Staging | None = None) -> Executor:
    """A process pool of ``workers`` processes (``forkserver`` start: no inherited threads or open store
    connections), or an :class:`InlineExecutor` for ``workers == 0``; ``staging``: what :func:`stage_batch`
    writes."""
    if workers <= 0:
        _init(context, model, None, staging)
        return InlineExecutor()
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init, initargs=(context, model, os.getpid(), staging)
    )
