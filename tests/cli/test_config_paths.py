"""Paths in a config file are relative to the config file's folder; ENGINE_*_PATH overrides to the cwd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def _deployment(folder: Path, **extra: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "store": {"path": "state/store"},
        "sources": {
            "inbox": {"path": "state/in"},
            "mllp": {"port": 0, "tls": {"cert": "tls/c.pem", "key": "tls/k.pem"}},
        },
        "sinks": {"folder": {"path": "./state/out"}, "kafka": {"ssl_certfile": "/etc/engine/kafka.pem"}},
        "dlq": {"folder": {"path": "../shared-dlq"}},
        "kafka": {"bootstrap_servers": ["127.0.0.1:9092"], "ssl_cafile": "tls/ca.pem"},
        **extra,
    }
    path = folder / "engine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_relative_paths_follow_the_config_file_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _deployment(tmp_path / "deploy" / "site-a")
    (tmp_path / "deploy" / "site-a" / "tls").mkdir()
    for name in ("c.pem", "k.pem"):
        (tmp_path / "deploy" / "site-a" / "tls" / name).write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for how in (config, Path(os.path.relpath(config, elsewhere))):  # given absolute or relative to the cwd
        s = load_settings(how, environ={})
        site = tmp_path / "deploy" / "site-a"
        assert s.store is not None and s.store.path == site / "state" / "store" / "messages.db"
        assert s.inbox is not None and s.inbox.path == site / "state" / "in"
        assert s.folder_sink is not None and s.folder_sink.path == site / "state" / "out"
        assert s.dlq_folder is not None and s.dlq_folder.path == tmp_path / "deploy" / "shared-dlq"
        assert Path(s.mllp.tls.cert) == site / "tls" / "c.pem" and Path(s.mllp.tls.key) == site / "tls" / "k.pem"
        assert Path(s.kafka_sink.ssl_cafile) == site / "tls" / "ca.pem"  # from the shared kafka: section
        assert s.kafka_sink.ssl_certfile == "/etc/engine/kafka.pem"


def test_absolute_paths_unchanged_and_env_overrides_stay_cwd_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _deployment(tmp_path / "deploy", store={"path": str(tmp_path / "abs" / "m.db")})
    assert load_settings(config, environ={}).store.path == tmp_path / "abs" / "m.db"  # type: ignore[union-attr]
    monkeypatch.chdir(tmp_path)
    s = load_settings(config, environ={"ENGINE_STORE_PATH": "from-env/store", "ENGINE_OUTBOX_PATH": "from-env/out"})
    assert s.store is not None and s.store.path == Path("from-env/store/messages.db")  # as on a command line
    assert s.folder_sink is not None and s.folder_sink.path == Path("from-env/out")


def test_shipped_local_config_puts_state_under_the_repository_var(tmp_path: Path) -> None:
    """`engine validate --config config/local.yaml` from any directory names the same store."""
    out = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "--config", str(REPO / "config" / "local.yaml")],
        capture_output=True, text=True, cwd=tmp_path, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert json.loads(out.stdout)["store"] == str(REPO / "var" / "store" / "messages.db")
