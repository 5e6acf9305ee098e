"""``engine run --config FILE``: run the service until SIGTERM/SIGINT (see engine.runtime for exit codes)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.errors import ConfigError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the service (MLLP, DICOM SCP, inbox, Kafka -> store -> worker -> sinks)",
        description="Run the long-lived service described by the config: listeners and inbox land the "
        "original bytes (persist before acknowledge), the worker converts and publishes to the sinks, "
        "permanent failures go to the dead letters. SIGTERM/SIGINT: stop intake, drain for "
        "worker.drain_timeout seconds, flush, exit.",
        epilog="exit codes:\n  0  clean shutdown after SIGTERM/SIGINT\n  2  bad config or cannot start "
        "(port in use, unusable folder, another engine on the same store)\n  3  stopped on an unexpected "
        "error (unfinished messages are resumed at the next start)",
    )
    parser.add_argument("--config", required=True, help="deployment YAML, e.g. config/local.yaml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.observability.logging import configure_logging
    from engine.runtime import Runtime
    from engine.settings import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"engine run: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.logging.level, settings.logging.format)
    return Runtime(settings).run()
