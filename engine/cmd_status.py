"""``engine status --config FILE``: message counts per status in the message store, as JSON.

``counts`` has every status (``received``, ``mapped``, ``published``, ``failed`` = dead-lettered,
``filtered`` = not a report); ``filtered_by_reason`` and ``failed_by_reason`` break the last two down by
their one-line reason."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from engine.errors import ConfigError, TransientError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="count stored messages per status",
        description="Print JSON counts per status in the message store (received, mapped, published, failed), "
        "the unfinished count and the age of the oldest unfinished message. Safe while the engine runs.",
        epilog="exit codes:\n  0  counts printed\n  1  the store could not be read (locked, corrupt)\n  2  "
        "configuration error, no store configured (Kafka deployment) or no store file yet",
    )
    parser.add_argument("--config", required=True, help="deployment YAML")
    parser.set_defaults(func=status)


def status(args: argparse.Namespace) -> int:
    from engine.settings import load_settings
    from engine.store import MessageStore

    try:
        settings = load_settings(args.config)
        if settings.store is None:
            raise ConfigError("no message store configured (with Kafka, the raw topic is the store)")
        if not settings.store.path.exists():
            raise ConfigError(f"no message store at {settings.store.path}")
    except ConfigError as exc:
        print(f"engine status: {exc}", file=sys.stderr)
        return 2
    store = MessageStore(settings.store.path)
    try:
        counts = store.counts()
        oldest = store.oldest_unfinished()
        filtered, failed = store.reasons("filtered"), store.reasons("failed")
    except TransientError as exc:
        print(f"engine status: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    report = {
        "store": str(settings.store.path),
        "counts": counts,
        "total": sum(counts.values()),
        "unfinished": counts["received"] + counts["mapped"],
        "oldest_unfinished_age_s": round(time.time() - oldest, 3) if oldest is not None else None,
        "filtered_by_reason": filtered,
        "failed_by_reason": failed,
    }
    print(json.dumps(report, sort_keys=True))
    return 0
