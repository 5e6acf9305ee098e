"""Every sub-command's --help has a description and its exit codes; replay of an unknown id is an error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.cli import build_parser, main
from engine.sources.base import CONTENT_HL7V2
from engine.store import MessageStore, Outcome, StoreSource

REPO = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_every_subcommand_has_a_description_and_exit_codes() -> None:
    commands = _commands()
    assert {"map", "run", "validate", "status", "replay"} <= set(commands)
    for name in commands:
        out = subprocess.run(
            [sys.executable, "-m", "engine", name, "--help"], capture_output=True, text=True, check=True,
            cwd=REPO, timeout=60,
        ).stdout  # fmt: skip
        usage, _, rest = out.partition("\n\n")
        assert usage.startswith(f"usage: engine {name}")
        description = rest.split("\n\n", 1)[0]
        assert not description.startswith(("options:", "positional")), f"{name}: no description"
        assert len(description.split()) >= 8, f"{name}: description too short: {description!r}"
        codes = out.split("exit codes:", 1)
        assert len(codes) == 2, f"{name}: --help names no exit codes"
        listed = re.findall(r"^\s+(\d)\s+\S", codes[1], flags=re.M)
        assert "0" in listed and "2" in listed, f"{name}: exit codes 0 and 2 not both described"


def test_top_level_help_lists_exit_codes() -> None:
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "exit codes" in out.stdout and "  3  " in out.stdout


def test_replay_of_an_unknown_id_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text(
        yaml.safe_dump({
            "store": {"path": "store"}, "sources": {"inbox": {"path": "in"}},
            "sinks": {"folder": {"path": "out"}}, "dlq": {"folder": {"path": "dlq"}},
        })
    )  # fmt: skip
    store = MessageStore(tmp_path / "store" / "messages.db")
    known = store.land(b"MSH|^~\\&|A", content_type=CONTENT_HL7V2, source="t", headers={})
    source = StoreSource(store)
    [env] = source.poll(10, 0.0)
    source.finish([(env, Outcome("published"))])
    store.close()

    assert main(["replay", "--config", str(config), "--id", "99999"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "engine replay: no stored message with id 99999 (nothing re-queued)\n"
    # one unknown id among known ones: nothing is re-queued
    assert main(["replay", "--config", str(config), "--id", known, "--id", "99998", "--id", "99999"]) == 2
    assert "ids 99998, 99999" in capsys.readouterr().err
    # a rejection at the door was never stored: said so, with where its bytes are, nothing re-queued
    assert main(["replay", "--config", str(config), "--id", known, "--id", "door-0123abcd"]) == 2
    err = capsys.readouterr().err
    assert "door-0123abcd is a rejection at the door" in err and "dead-letter destination" in err
    assert main(["status", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["published"] == 1
    # the known id alone is replayed
    assert main(["replay", "--config", str(config), "--id", known]) == 0
    assert json.loads(capsys.readouterr().out) == {"requeued": 1}
