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

EPILOG = """exit codes (every command; see each command's --help):
  0  success
  1  something was rejected or failed (the rest was still done)
  2  usage or configuration error (one line on stderr naming the problem)
  3  `engine run` stopped on an unexpected error"""

#: Subcommand modules; each exposes ``register(subparsers)`` which sets ``func(args) -> int`` as default.
COMMANDS = ("map", "backfill", "run", "validate", "status", "replay", "send")


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions to the terminal; keeps text with explicit line breaks (the exit-code epilogs) as is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine",
        description="Imaging report integration engine: HL7 v2 ORU^R01 and DICOM SR in, HL7 Europe Imaging "
        "Report FHIR R5 Bundles out. `engine COMMAND --help` describes each command.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"engine.cmd_{name}")
        except ModuleNotFoundError as exc:  # a subcommand not built in this installation
            if exc.name != f"engine.cmd_{name}":
                raise
            continue
        module.register(sub)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
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
