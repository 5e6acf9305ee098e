"""``engine backfill --config FILE [--workers N] [--report FILE] SOURCE...``: convert archives at scale.

SOURCE: files or directories (recursive; HL7 v2 and DICOM mixed, detected by content): single messages,
bulk and batch files (FHS/BHS, back to back), MLLP-framed captures, listener logs (``<SB>``/``<EB>``
layout); see :mod:`engine.backfill.formats`. Outputs go to the deployment's sinks (``sinks.folder``,
``sinks.kafka``: the service's :class:`engine.sinks.base.Sink` interface), rejections to its dead letters
(``dlq``), and the checkpoint to its message store (``store.path``; ``--checkpoint FILE`` for a deployment
without one). All cores by default (``--workers``, 0 = in this process; inputs under 2 MiB in process).
Running the same command again after a kill or Ctrl-C continues where it stopped; after completion it
converts nothing and prints the same summary.

**Who writes.** With a folder sink alone (``sinks.folder``), the worker processes write the Bundles and the
folder dead letters themselves and this process only reads, checks duplicates, publishes the staged files in
input order and commits (:mod:`engine.backfill.staging`); ``--workers N`` is N conversion processes besides
this one, ``--workers 0`` converts in this process. Kafka and FHIR-server sinks are written by this process
in input order (every version of a report in archive order).

Exit codes: 0 done, nothing rejected; 1 done, something rejected (the rest converted); 2 usage or
configuration error; 130 interrupted (SIGINT/SIGTERM; progress committed). Files that are not message
files (a README, a binary blob) are skipped as a whole, counted by reason in ``skipped_files`` and the
summary, and do not change the exit code.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import sys
from pathlib import Path
from typing import Any

from engine.backfill.checkpoint import SqliteCheckpoint, job_id
from engine.backfill.formats import iter_files
from engine.backfill.progress import Progress
from engine.backfill.run import Interrupted, Options, auto_workers, run_backfill
from engine.backfill.staging import Staging, WorkerDeadLetters
from engine.errors import ConfigError
from engine.sinks.base import DeadLetterSink, Sink

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backfill",
        help="convert archives (directories, bulk files, listener logs); resumable",
        description="Convert archived HL7 v2 and DICOM SR inputs (directories read recursively, bulk and FHS/BHS "
        "batch files, MLLP captures, listener logs) to the deployment's sinks (folder, Kafka, FHIR server) with "
        "all cores, a checkpoint in the deployment's store (a re-run after a kill continues where it stopped; "
        "exact duplicate messages are counted once), progress on stderr and a final summary.",
        epilog="exit codes:\n  0  done, nothing rejected\n  1  done, some messages rejected (dead letters; the rest "
        "converted)\n  2  usage or configuration error, or a source does not exist\n  130  interrupted "
        "(SIGINT/SIGTERM): progress committed, run the same command again to continue",
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="files or directories (recursive)")
    p.add_argument("--config", required=True, type=Path, help="deployment YAML (mapping, sinks, dlq, store)")
    p.add_argument(
        "--workers", type=int, default=None,
        help="worker processes (default: all cores; in process for inputs under 2 MiB); 0 = in this process",
    )  # fmt: skip
    p.add_argument("--report", type=Path, help="write the final summary as JSON to this file")
    p.add_argument("--checkpoint", type=Path, help="SQLite checkpoint file (default: the config's store.path)")
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between plain progress lines")
    p.add_argument(
        "--commit-interval", type=float, default=2.0,
        help="seconds between checkpoint commits (sinks are flushed first; work after the last one is redone)",
    )  # fmt: skip
    p.set_defaults(func=_run)


def _destinations(settings: Any) -> tuple[list[Sink], DeadLetterSink, str]:
    from engine.runtime import _kafka
    from engine.sinks.dlq_folder import FolderDeadLetters
    from engine.sinks.folder import FolderSink

    sinks: list[Sink] = []
    names: list[str] = []
    if settings.folder_sink is not None:
        sinks.append(FolderSink(settings.folder_sink.path))
        names.append(f"folder:{Path(settings.folder_sink.path).resolve()}")
    if settings.kafka_sink is not None:
        sinks.append(_kafka("KafkaSink")(settings.kafka_sink))
        names.append(f"kafka:{getattr(settings.kafka_sink, 'output_topic', '')}")
    if settings.fhir_sink is not None:  # the FHIR publisher (sinks.fhir): same Sink interface as the service
        from engine.publishers.fhir import FhirSink

        sinks.append(FhirSink(settings.fhir_sink))
        names.append(f"fhir:{settings.fhir_sink.model}")
    if settings.dlq_folder is not None:
        dead: DeadLetterSink = FolderDeadLetters(settings.dlq_folder.path, deferred=True)
    else:
        dead = _kafka("KafkaDeadLetters")(settings.dlq_kafka)
    return sinks, dead, ",".join(names)


def _staging(settings: Any, sinks: list[Sink]) -> Staging | None:
    """Workers write when the only sink is the folder sink (see the module docstring)."""
    from engine.sinks.folder import FolderSink

    if len(sinks) != 1 or not isinstance(sinks[0], FolderSink):
        return None
    dead = functools.partial(WorkerDeadLetters, settings.dlq_folder.path) if settings.dlq_folder is not None else None
    return Staging(sinks[0].path, sync=True, dead_letters=dead)


def _run(args: argparse.Namespace) -> int:
    from engine.settings import load_settings

    missing = [str(p) for p in args.sources if not p.exists()]
    if missing:
        print(f"engine backfill: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print("engine backfill: --workers must be 0 or more", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
        db = args.checkpoint or (settings.store.path if settings.store is not None else None)
        if db is None:
            raise ConfigError("no store.path in the config: give --checkpoint FILE")
        sinks, dead, destination = _destinations(settings)
    except (ConfigError, OSError) as exc:
        print(f"engine backfill: {exc}", file=sys.stderr)
        return 2
    job = job_id(args.sources, destination)
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    lock = open(Path(db).with_name(f"{Path(db).name}.backfill-{job}.lock"), "a+b")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"engine backfill: job {job} is already running", file=sys.stderr)
        return 2
    checkpoint = SqliteCheckpoint(Path(db), job, args.sources)
    files = list(iter_files(args.sources))
    total = sum(f.size for f in files)
    progress = Progress(total, interval=args.progress_interval)
    workers = auto_workers(args.workers, total)
    options = Options(
        workers=workers,
        limit=settings.mapping.max_message_bytes,
        flush_seconds=max(0.0, args.commit_interval),
        model=settings.model,
        staging=_staging(settings, sinks),
    )
    code = 0
    try:
        tally = run_backfill(files, settings.mapping, sinks, dead, checkpoint, options=options, progress=progress)
    except Interrupted as exc:
        print(f"engine backfill: {exc}", file=sys.stderr)
        code = 130
        tally = None
    finally:
        checkpoint.close()
        for sink in sinks:
            sink.close()
        dead.close()
        lock.close()
    if tally is None:
        return code
    report = {
        "job": job,
        **tally.as_dict(),
        "elapsed_s": round(progress.elapsed(), 3),
        "messages_per_s": round(progress.rate(tally), 1),
        "workers": workers,
    }
    print(progress.summary(tally), file=sys.stderr)
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if tally.rejected else 0  # skipped (non-message) files are reported, they do not fail the job
