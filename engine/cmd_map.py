"""``engine map [--model document] [--config FILE] [--out DIR] [--workers N] INPUT...``: convert files or
whole directories (recursive) with no server running.

One implementation with ``engine backfill`` (:mod:`engine.backfill.run`: the same readers, process pool,
duplicate check and outcomes); ``engine map`` differs only in where things go and that it keeps no
checkpoint: one JSON file per output Bundle in ``--out`` named ``<bundle id>.json`` (write-then-rename, no
fsync: the inputs stay in place), or the Bundles on stdout, one per line, in input order. ``summary.json``::

    {"inputs": messages seen, "bundles": distinct Bundles written (a resend overwrites its file),
     "bundles_counted": "distinct", "outputs": Bundle writes, "duplicates": exact repeats not converted again,
     "filtered": {reason: messages}, "rejected": [{"input": "<file>#<n>", "reason": ...}]}

The original bytes of each rejected message go under ``rejected/`` (``<8 hex of the path>_<file name>#<n>``).
Exit 0 when nothing was rejected, 1 when something was (everything else is still converted), 2 on usage
errors; one line per rejected message on stderr, never a traceback for bad input.

A file that is not a message file (a ``README.md``, a binary blob: no HL7 v2 message start, not DICOM) is
skipped as a whole: one line ``skipped <file>: <reason>`` on stderr, listed in ``summary.json``
(``"skipped": [{"input", "reason"}]``), and it does **not** change the exit code (a folder of archives
often carries notes next to the messages; nothing in it was a message that failed).

The output model: ``--model`` when given, else the config's ``sinks.fhir.model`` (the model the deployment
publishes), else ``document``. The config's ``mapping:`` section gives the sender profiles.

With ``--out`` the worker processes write the Bundle files and ``rejected/`` themselves; this process
publishes them in input order (:mod:`engine.backfill.staging`). ``--workers N``: N conversion processes
besides this one; 0: in this process.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from engine.backfill.checkpoint import MemoryCheckpoint
from engine.backfill.formats import iter_files
from engine.backfill.run import Interrupted, Options, auto_workers, run_backfill
from engine.backfill.spill import SpillMap
from engine.backfill.staging import Staging
from engine.outcomes import Output
from engine.sources.base import Envelope
from pipelines.context import MappingContext

__all__ = ["RejectedFiles", "config_model", "load_mapping_context", "register", "write_atomic"]

DEFAULT_MAPPING = Path(__file__).resolve().parent.parent / "config" / "mapping-senders.yaml"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "map",
        help="convert HL7 v2 / DICOM SR files or directories to FHIR Bundles",
        description="Convert HL7 v2 ORU^R01 files (one message or many: MLLP-framed, FHS/BHS batches, logs) and "
        "DICOM SR files (detected by content) to FHIR R5 Bundles, without any server. Directories are read "
        "recursively. With --out: one <Bundle.id>.json per Bundle, summary.json and rejected/ with the "
        "original bytes of each rejected message.",
        epilog="exit codes:\n  0  every message converted\n  1  some messages were rejected (one line each on "
        "stderr; the rest were converted)\n  2  usage or configuration error, or an input does not exist",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or directories (recursive)")
    from pipelines.output.models import model_names

    p.add_argument(
        "--model", default=None, choices=model_names(),
        help="output model (default: the config's sinks.fhir.model, else document)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, help="output directory (default: Bundles to stdout, one per line)")
    p.add_argument("--config", type=Path, help="YAML with a `mapping:` section (sender profiles)")
    p.add_argument(
        "--workers", type=int, default=None,
        help="worker processes (default: all cores; in process for inputs under 2 MiB); 0 = in this process",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="do not list rejected messages on stderr")
    p.set_defaults(func=_run)


def load_mapping_context(config: Path | None) -> MappingContext:
    """The `mapping:` section of ``config``; when ``config`` is None or has no (or an empty) `mapping:` section,
    the shipped sender profiles (config/mapping-senders.yaml). ``engine run`` follows the same rule
    (engine.settings), so every entry point maps the same bytes to the same Bundles."""
    path = config or (DEFAULT_MAPPING if DEFAULT_MAPPING.is_file() else None)
    if path is None:
        return MappingContext()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    if not data.get("mapping") and config is not None and DEFAULT_MAPPING.is_file():
        return load_mapping_context(None)
    return MappingContext.from_mapping(data.get("mapping"))


def config_model(config: Path | None) -> str | None:
    """``sinks.fhir.model`` of ``config`` (the model its deployment publishes), or None."""
    if config is None:
        return None
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    sinks = data.get("sinks") if isinstance(data, dict) else None
    fhir = sinks.get("fhir") if isinstance(sinks, dict) else None
    model = fhir.get("model") if isinstance(fhir, dict) else None
    return str(model) if model else None


def write_atomic(path: Path, data: bytes) -> None:
    """Write-then-rename, so a reader never sees a partial file (no fsync: a batch conversion whose inputs
    stay in place; the service's folder sink syncs, see engine/sinks/folder.py)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class _Bundles:
    """The map command's sink: files in ``out`` (or stdout); counts distinct Bundle ids."""

    name = "map"
    concurrent_flush = True

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.ids = SpillMap()  # distinct Bundle ids, bounded memory (engine.backfill.spill)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)

    def write(self, output: Output, envelope: Envelope) -> None:
        self.ids.add(output.bundle_id)
        if self.out is None:
            sys.stdout.buffer.write(output.body + b"\n")
        else:
            write_atomic(self.out / f"{output.bundle_id}.json", output.body)

    def flush(self) -> None:
        if self.out is None:
            sys.stdout.buffer.flush()

    def close(self) -> None:
        return None


class RejectedFiles:
    """The files of the map command's dead letters: ``out/rejected/<8 hex of the path>_<file name>#<n>``
    (written by the worker processes, or by this one)."""

    name = "map-rejected-files"

    def __init__(self, out: Path) -> None:
        self.dir = out / "rejected"

    def put(self, envelope: Envelope, payload: bytes, reason: str, error_class: str) -> None:
        path = Path(envelope.headers.get("input", envelope.id))
        number = envelope.id.rsplit("#", 1)[-1]
        self.dir.mkdir(exist_ok=True)
        tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        write_atomic(self.dir / f"{tag}_{path.name}#{number}", payload)


class _Rejected:
    """The map command's list of rejected messages and skipped files (summary, stderr), and their files."""

    name = "map-rejected"

    def __init__(self, out: Path | None, quiet: bool) -> None:
        self.files = RejectedFiles(out) if out is not None else None
        self.quiet = quiet
        self.items: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []

    def record(self, label: str, reason: str, error_class: str) -> None:
        """A message dead-lettered by a worker, or (``error_class == "skipped"``) a skipped file."""
        if error_class == "skipped":
            self.skipped.append({"input": label, "reason": reason.removeprefix("skipped: ")})
            if not self.quiet:
                print(f"skipped {label}: {reason.removeprefix('skipped: ')}", file=sys.stderr)
            return
        self.items.append({"input": label, "reason": reason})
        if not self.quiet:
            print(f"rejected {label}: {reason}", file=sys.stderr)

    def put(self, envelope: Envelope, payload: bytes, reason: str, error_class: str) -> None:
        path = Path(envelope.headers.get("input", envelope.id))
        self.record(f"{path}#{envelope.id.rsplit('#', 1)[-1]}", reason, error_class)
        if self.files is not None:
            self.files.put(envelope, payload, reason, error_class)

    def close(self) -> None:
        return None


def _run(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        print(f"engine map: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        ctx = load_mapping_context(args.config)
        model = args.model or config_model(args.config) or "document"
        from pipelines.output.models import model_names

        if model not in model_names():
            raise ValueError(f"{args.config}: sinks.fhir.model {model!r} is not one of {', '.join(model_names())}")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"engine map: bad configuration: {exc}", file=sys.stderr)
        return 2
    bundles, rejected = _Bundles(args.out), _Rejected(args.out, args.quiet)
    files = list(iter_files(args.inputs))
    workers = auto_workers(args.workers, sum(f.size for f in files))
    staging = None
    if args.out is not None:  # the workers write the files (no sync: the inputs stay in place)
        staging = Staging(args.out, sync=False, dead_letters=functools.partial(RejectedFiles, args.out))
    options = Options(workers=workers, limit=ctx.max_message_bytes, model=model, staging=staging)
    seen = MemoryCheckpoint()
    try:
        tally = run_backfill(files, ctx, [bundles], rejected, seen, options=options, published=bundles.ids.add)
    except Interrupted as exc:
        print(f"engine map: {exc}", file=sys.stderr)
        return 130
    finally:
        seen.close()
    distinct = len(bundles.ids)
    bundles.ids.close()
    summary = {
        "inputs": tally.inputs,
        "bundles": distinct,
        "bundles_counted": "distinct Bundle ids (a resend of the same Bundle overwrites its file)",
        "outputs": tally.outputs,
        "duplicates": tally.duplicates,
        "filtered": dict(sorted(tally.filtered.items())),
        "rejected": rejected.items,
        "skipped": rejected.skipped,
    }
    if args.out is not None:
        write_atomic(args.out / "summary.json", json.dumps(summary, indent=2).encode("utf-8") + b"\n")
        print(
            f"{tally.inputs} messages, {distinct} bundles, {sum(tally.filtered.values())} filtered, "
            f"{tally.duplicates} duplicates, {len(rejected.items)} rejected, {len(rejected.skipped)} skipped files "
            f"-> {args.out}",
            file=sys.stderr,
        )
    return 1 if rejected.items else 0
