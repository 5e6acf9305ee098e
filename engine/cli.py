"""The ``engine`` console script: one argparse subcommand per module ``engine.cmd_<name>``.

Exit codes: 0 success, 1 something was rejected / failed (the rest still done), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

__all__ = ["main"]

#: Subcommand modules; each exposes ``register(subparsers)`` which sets ``func(args) -> int`` as default.
COMMANDS = ("map", "backfill", "run", "validate", "status", "replay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine", description="Imaging report integration engine")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"engine.cmd_{name}")
        except ModuleNotFoundError as exc:  # a subcommand not built in this installation
            if exc.name != f"engine.cmd_{name}":
                raise
            continue
        module.register(sub)
    return parser


def quiet_libraries() -> None:
    """Library warnings can quote element values (dates, names) from the data being read: never emit them
    by default (the engine's own log lines carry ids only). pydicom's logger stays at ERROR."""
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
