"""``engine map``: convert files or whole directories (recursive) with no server running.

Contract (issue 3): one JSON file per output Bundle in ``--out`` named ``<bundle id>.json``;
``summary.json`` = {"inputs": messages seen, "bundles": written, "rejected": [{"input": "<file>#<n>",
"reason": ...}]}; the original bytes of each rejected message under ``rejected/``; exit 0 when nothing
was rejected, 1 when something was, 2 on usage errors; one line per rejected message on stderr, never a
traceback for bad input.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from engine.convert import Converter

__all__ = ["MapSummary", "iter_inputs", "run_map", "write_atomic"]


@dataclass(slots=True)
class MapSummary:
    inputs: int = 0
    bundles: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"inputs": self.inputs, "bundles": self.bundles, "rejected": self.rejected}


def iter_inputs(paths: list[Path]) -> Iterator[Path]:
    """Files in the given order; directories walked recursively in sorted order (hidden files skipped)."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


def write_atomic(path: Path, data: bytes) -> None:
    """Write-then-rename, so a reader never sees a partial file. No fsync: ``engine map`` is a batch
    conversion whose inputs stay in place (the service's folder sink fsyncs; see engine/sinks/folder.py)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def run_map(converter: Converter, inputs: list[Path], out: Path | None, *, quiet: bool = False) -> MapSummary:
    """Convert every input; Bundle files are written by a small thread pool (file creation is I/O latency
    that overlaps with the next message's conversion). Writes of one Bundle id keep their input order."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="map-write") as pool:
        return _run_map(converter, inputs, out, quiet, pool)


def _run_map(
    converter: Converter, inputs: list[Path], out: Path | None, quiet: bool, pool: ThreadPoolExecutor
) -> MapSummary:
    summary = MapSummary()
    written: set[str] = set()
    inflight: dict[str, Future[None]] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for path in iter_inputs(inputs):
        try:
            data = path.read_bytes()
        except OSError as exc:
            summary.inputs += 1
            reason = f"cannot read file: {exc.strerror or exc.__class__.__name__}"
            summary.rejected.append({"input": f"{path}#1", "reason": reason})
            print(f"rejected {path}#1: {reason}", file=sys.stderr)
            continue
        result = converter.convert(data)
        summary.inputs += result.messages
        for output in result.outputs:
            if out is None:
                sys.stdout.buffer.write(output.body + b"\n")
            else:
                earlier = inflight.get(output.bundle_id)
                if earlier is not None:
                    earlier.result()  # a later resend of the same Bundle overwrites, in input order
                inflight[output.bundle_id] = pool.submit(write_atomic, out / f"{output.bundle_id}.json", output.body)
            if output.bundle_id not in written:
                written.add(output.bundle_id)
                summary.bundles += 1
        for rej in result.rejections:
            label = f"{path}#{rej.index}"
            summary.rejected.append({"input": label, "reason": rej.reason})
            if not quiet:
                print(f"rejected {label}: {rej.reason}", file=sys.stderr)
            if out is not None:
                rejected_dir = out / "rejected"
                rejected_dir.mkdir(exist_ok=True)
                # <digest of the full path>_<file name>#<message number>: unique, and still readable
                tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
                write_atomic(rejected_dir / f"{tag}_{path.name}#{rej.index}", rej.raw)
    for future in inflight.values():
        future.result()  # surface any write error before the summary claims success
    if out is not None:
        write_atomic(out / "summary.json", json.dumps(summary.as_dict(), indent=2).encode("utf-8") + b"\n")
    return summary
