"""``engine map [--model document] [--config FILE] [--out DIR] INPUT...``"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from engine.convert import Converter
from engine.mapcmd import run_map
from pipelines.context import MappingContext

__all__ = ["register"]

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

    p.add_argument("--model", default="document", choices=model_names(), help="output model (default: document)")
    p.add_argument("--out", type=Path, help="output directory (default: Bundles to stdout, one per line)")
    p.add_argument("--config", type=Path, help="YAML with a `mapping:` section (sender profiles)")
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


def _run(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        print(f"engine map: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        ctx = load_mapping_context(args.config)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"engine map: bad configuration: {exc}", file=sys.stderr)
        return 2
    summary = run_map(Converter(ctx, args.model), list(args.inputs), args.out, quiet=args.quiet)
    if args.out is not None:
        print(
            f"{summary.inputs} messages, {summary.bundles} bundles, {len(summary.rejected)} rejected -> {args.out}",
            file=sys.stderr,
        )
    return 1 if summary.rejected else 0
