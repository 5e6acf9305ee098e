"""compose.yaml (not run here: no Docker engine): engine + Kafka + FHIR server, wired to a valid engine config."""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_volume_and_grace_period() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"engine", "kafka", "fhir"}
    engine = services["engine"]
    assert engine["build"]["context"] == "."
    config = engine["command"][-1]
    assert config.startswith("/app/config/")
    assert any(v.endswith(":/app/var") for v in engine["volumes"])  # the store survives the container
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    grace = int(str(engine["stop_grace_period"]).rstrip("s"))
    settings = load_settings(ROOT / "config" / Path(config).name, environ={})
    assert settings.worker.drain_timeout < grace
    assert settings.kafka_sink is not None and settings.kafka_sink.bootstrap_servers == ("kafka:9092",)
    assert services["fhir"]["environment"]["hapi.fhir.fhir_version"] == "R5"


def test_docker_config_drains_within_the_default_grace_period() -> None:
    settings = load_settings(ROOT / "config" / "docker.yaml", environ={})
    assert settings.worker.drain_timeout < 10  # docker/podman stop: SIGKILL 10 s after SIGTERM
    assert settings.store is not None and str(settings.store.path).startswith("/app/var/")
