"""``engine replay --config FILE [--id ID ...] [--since ISO --until ISO] [--dead-letters]``.

Sets the selected finished messages in the message store back to ``received``; a running engine picks
them up within a poll interval, a stopped one at its next start. Outputs are idempotent (same Bundle
ids), so a replay overwrites rather than duplicates. At least one selector is required.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from engine.errors import ConfigError, TransientError

__all__ = ["register"]


def _instant(value: str) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="re-queue stored messages",
        description="Set finished messages in the message store (published or dead-lettered) back to "
        "received; a running engine converts them again within a second, a stopped one at its next start. "
        "Selectors combine (all must match); at least one is required. Outputs have deterministic ids, so "
        "a replay overwrites rather than duplicates. Prints {\"requeued\": N}.",
        epilog="exit codes:\n  0  done (N may be 0 when --since/--until/--dead-letters match nothing)\n  1  the "
        "store could not be updated\n  2  usage or configuration error, no store, or an --id that is not in "
        "the store (nothing is re-queued then; a door-… id names a rejection at the door, never stored)",
    )
    parser.add_argument("--config", required=True, help="deployment YAML")
    parser.add_argument("--id", action="append", default=[], dest="ids", metavar="ID", help="envelope id (repeatable)")
    parser.add_argument(
        "--since", type=_instant, metavar="ISO", help="received at or after (ISO 8601, UTC if no offset)"
    )
    parser.add_argument("--until", type=_instant, metavar="ISO", help="received before (ISO 8601, UTC if no offset)")
    parser.add_argument("--dead-letters", action="store_true", help="only messages that were dead-lettered")
    parser.set_defaults(func=replay)


def replay(args: argparse.Namespace) -> int:
    from engine.settings import load_settings
    from engine.store import MessageStore

    try:
        if not (args.ids or args.since is not None or args.until is not None or args.dead_letters):
            raise ConfigError("choose what to replay: --id, --since/--until and/or --dead-letters")
        door = [i for i in args.ids if i.startswith("door-")]
        if door:
            raise ConfigError(
                f"{door[0]} is a rejection at the door (engine.sources.door): the listener refused it before "
                "storing it, so there is nothing to re-queue; its kept bytes and reason are in the dead-letter "
                "destination (error class IngressRejected): fix the cause and have the sender resend it "
                "(or `engine send` the kept HL7 bytes, `storescu` a DICOM file)"
            )
        if any(not i.isdigit() for i in args.ids):
            raise ConfigError("--id expects envelope ids as shown by the logs and dead-letter sidecars (digits)")
        settings = load_settings(args.config)
        if settings.store is None:
            raise ConfigError("replay needs the message store (with Kafka, replay from the raw or .dlq topic)")
        if not settings.store.path.exists():
            raise ConfigError(f"no message store at {settings.store.path}")
    except ConfigError as exc:
        print(f"engine replay: {exc}", file=sys.stderr)
        return 2
    store = MessageStore(settings.store.path)
    try:
        unknown = [i for i in args.ids if store.get(i) is None]
        if unknown:
            noun = "id" if len(unknown) == 1 else "ids"
            print(f"engine replay: no stored message with {noun} {', '.join(unknown)} (nothing re-queued)",
                  file=sys.stderr)  # fmt: skip
            return 2
        count = store.requeue(ids=args.ids, since=args.since, until=args.until, dead_letters=args.dead_letters)
    except TransientError as exc:
        print(f"engine replay: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"requeued": count}, sort_keys=True))
    return 0
