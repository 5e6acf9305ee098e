"""Settings validation and the validate / status / replay subcommands (run through engine.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli import main
from engine.errors import ConfigError
from engine.settings import load_settings, parse_settings
from engine.sources.base import CONTENT_HL7V2
from engine.store import MessageStore, Outcome, StoreSource

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "store": {"path": str(tmp_path / "store")},
        "sources": {"inbox": {"path": str(tmp_path / "in")}, "mllp": {"port": 0}},
        "sinks": {"folder": {"path": str(tmp_path / "out")}},
        "dlq": {"folder": {"path": str(tmp_path / "dlq")}},
        "health": {"port": 0},
    }
    data.update(overrides)
    return data


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_shipped_local_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(REPO / "config" / "local.yaml")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["valid"] is True
    assert summary["sources"] == ["inbox", "mllp", "dicom"]
    assert summary["health"] == "127.0.0.1:8080"
    settings = load_settings(REPO / "config" / "local.yaml", environ={})
    assert settings.mllp.port == 2575 and settings.dicom.port == 11112 and settings.dicom.ae_title == "ENGINE"
    assert settings.store is not None and settings.store.path == REPO / "var" / "store" / "messages.db"


def test_validate_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(_write(tmp_path, _config(tmp_path)))]) == 0
    assert json.loads(capsys.readouterr().out)["dlq"] == "folder"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dlq": None}, "dead-letter destination is required"),
        ({"sinks": {}}, "configure at least one of folder, kafka"),
        ({"sources": {}}, "configure at least one of inbox"),
        ({"surprise": 1}, "unknown key(s) surprise"),
        ({"health": {"port": 70000}}, "health.port"),
        ({"sources": {"mllp": {"port": "x"}}}, "sources.mllp"),
        ({"sources": {"dicom": {"ae_title": "WAY-TOO-LONG-AE-TITLE"}}}, "sources.dicom"),
        ({"mapping": {"senders": [{"accession_field": "PID-3"}]}}, "mapping: senders[0]"),
        ({"worker": {"retry": {"attempts": 0}}}, "worker.retry.attempts"),
        ({"logging": {"level": "LOUD"}}, "logging.level"),
    ],
)
def test_validate_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    data = _config(tmp_path)
    for key, value in change.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    assert main(["validate", "--config", str(_write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_validate_unreadable_and_malformed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert main(["validate", "--config", str(_write(tmp_path, "sources: [unclosed"))]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err


def test_env_overrides(tmp_path: Path) -> None:
    env = {"ENGINE_HEALTH_PORT": "9123", "ENGINE_MLLP_PORT": "2999", "ENGINE_STORE_PATH": str(tmp_path / "x.db"),
           "ENGINE_DICOM_PORT": "1"}
    settings = parse_settings(_config(tmp_path), environ=env)
    assert settings.health is not None and settings.health.port == 9123
    assert settings.mllp.port == 2999
    assert settings.dicom is None  # overrides never switch a transport on
    assert settings.store is not None and settings.store.path == tmp_path / "x.db"
    with pytest.raises(ConfigError, match="ENGINE_HEALTH_PORT"):
        parse_settings(_config(tmp_path), environ={"ENGINE_HEALTH_PORT": "http"})


def test_status_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path, _config(tmp_path))
    assert main(["status", "--config", str(cfg)]) == 2  # no store yet
    assert "no message store" in capsys.readouterr().err
    store = MessageStore(tmp_path / "store" / "messages.db")
    ids = [store.land(b"MSH|%d" % i, content_type=CONTENT_HL7V2, source="t", headers={}) for i in range(3)]
    source = StoreSource(store)
    envs = source.poll(10, 0.0)
    source.finish([(envs[0], Outcome("published")), (envs[1], Outcome("failed", "bad", "ParseError"))])
    store.close()

    assert main(["status", "--config", str(cfg)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"received": 1, "mapped": 0, "published": 1, "failed": 1, "filtered": 0}
    assert report["unfinished"] == 1 and report["total"] == 3

    assert main(["replay", "--config", str(cfg)]) == 2  # a selector is required
    capsys.readouterr()
    assert main(["replay", "--config", str(cfg), "--dead-letters"]) == 0
    assert json.loads(capsys.readouterr().out) == {"requeued": 1}
    assert main(["replay", "--config", str(cfg), "--id", ids[0]]) == 0
    assert json.loads(capsys.readouterr().out) == {"requeued": 1}
    assert main(["replay", "--config", str(cfg), "--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02"]) == 0
    assert json.loads(capsys.readouterr().out) == {"requeued": 0}
    assert main(["status", "--config", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["received"] == 3


def test_missing_transport_module_is_a_clear_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.settings as settings_module

    monkeypatch.setitem(settings_module.EXTERNAL, "mllp", ("engine.sources.no_such_module", "MllpSettings"))
    with pytest.raises(ConfigError, match=r"sources.mllp: this installation has no mllp support"):
        parse_settings(_config(tmp_path), environ={})


def test_kafka_sections_merge_the_shared_kafka_keys(tmp_path: Path) -> None:
    data = _config(tmp_path, kafka={"bootstrap_servers": ["127.0.0.1:19092"], "output_topic": "shared.out"})
    data["sinks"] = {"kafka": {"output_topic": "own.out"}}
    data["dlq"] = {"kafka": {}}
    settings = parse_settings(data, environ={})
    assert settings.kafka_sink.output_topic == "own.out"
    assert settings.dlq_kafka.bootstrap_servers == ("127.0.0.1:19092",)
    assert settings.dlq_kafka.output_topic == "shared.out"
    data["dlq"] = {"kafka": {}, "folder": {"path": str(tmp_path)}}
    with pytest.raises(ConfigError, match="exactly one"):
        parse_settings(data, environ={})
