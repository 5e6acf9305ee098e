"""``engine validate --config FILE``: check a deployment config without starting anything.

Prints a PHI-free JSON summary and exits 0, or prints one line naming the problem and exits 2. With a FHIR sink
(``sinks.fhir``) the server's CapabilityStatement is read and every interaction the chosen model needs and the
server lacks is one line (exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from engine.errors import ConfigError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "validate",
        help="check a config file without starting",
        description="Check a deployment config without starting anything: every section and key, the "
        "mapping profiles and that the pipelines import. Prints a JSON summary without PHI.",
        epilog="exit codes:\n  0  the config is valid (JSON summary on stdout)\n  2  it is not (one line on "
        "stderr naming the file and the problem)",
    )
    parser.add_argument("--config", required=True, help="deployment YAML")
    parser.set_defaults(func=validate)


def _server_gaps(settings: Any) -> list[str]:
    """With a FHIR sink: the interactions the model needs and the server's CapabilityStatement lacks."""
    if getattr(settings, "fhir_sink", None) is None:
        return []
    from engine.publishers.capability import check_server

    return check_server(settings.fhir_sink)


def validate(args: argparse.Namespace) -> int:
    from engine.settings import load_settings

    try:
        settings = load_settings(args.config)
        try:
            importlib.import_module("engine._dispatch")  # the mapping pipelines import cleanly
        except ImportError as exc:
            raise ConfigError(f"the mapping pipelines cannot be imported: {exc}") from exc
        gaps = _server_gaps(settings)
    except ConfigError as exc:
        print(f"engine validate: {exc}", file=sys.stderr)
        return 2
    if gaps:
        for gap in gaps:
            print(f"engine validate: FHIR server lacks {gap} (model {settings.model})", file=sys.stderr)
        return 2
    print(json.dumps({"config": str(args.config), "valid": True, **settings.summary()}, sort_keys=True))
    return 0
