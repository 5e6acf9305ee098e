"""Kafka settings: one frozen dataclass built from the ``kafka:`` section of a deployment YAML.

Every key is optional except ``bootstrap_servers``; unknown keys are a :class:`engine.errors.ConfigError`
so that a typo never silently falls back to a default. Secrets are never written in the YAML: the SASL
password is read from the environment variable named by ``sasl_password_env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from engine.errors import ConfigError
from engine.sources.base import CONTENT_DICOM, CONTENT_HL7V2

__all__ = ["KafkaSettings"]

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_OFFSET_RESET = ("earliest", "latest")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    client_id: str = "imaging-report-engine"
    # raw topics: the landing store (MLLP / DICOM SCP produce here, workers consume)
    hl7_topic: str = "engine.raw.hl7"
    dicom_topic: str = "engine.raw.dicom"
    consume: tuple[str, ...] = ("hl7", "dicom")  # which raw topics the workers read
    group_id: str = "engine-workers"
    output_topic: str = "engine.fhir.bundles"
    dlq_topic: str | None = None  # None: "<raw topic>.dlq" (dead letters stay next to their source)
    # consumer
    max_poll_records: int = 50  # small, so a slow sink cannot push a batch past max_poll_interval_ms
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    auto_offset_reset: str = "earliest"
    # producer (idempotent, acks=all are kafka-python 3.x defaults and are forced below)
    linger_ms: int = 0  # persist-before-ACK waits for each record: batching delay only adds latency (measured 3x)
    max_request_size: int = 1_048_576
    compression_type: str | None = None
    max_block_ms: int = 10_000  # how long send() may wait for metadata / buffer space
    delivery_timeout_s: float = 30.0  # flush()/land() wait at most this long for broker acks
    request_timeout_ms: int = 30_000
    bootstrap_timeout_ms: int = 30_000  # how long start-up waits for a first broker connection
    # security
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None

    def __post_init__(self) -> None:
        if not self.bootstrap_servers or not all(isinstance(s, str) and ":" in s for s in self.bootstrap_servers):
            raise ConfigError(f"kafka.bootstrap_servers must list host:port entries, got {self.bootstrap_servers!r}")
        for name in ("hl7_topic", "dicom_topic", "group_id", "output_topic", "client_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"kafka.{name} must be a non-empty string")
        if not self.consume or any(c not in ("hl7", "dicom") for c in self.consume):
            raise ConfigError(f"kafka.consume must list 'hl7' and/or 'dicom', got {list(self.consume)!r}")
        if self.security_protocol not in _SECURITY_PROTOCOLS:
            raise ConfigError(f"kafka.security_protocol must be one of {', '.join(_SECURITY_PROTOCOLS)}")
        if self.sasl_mechanism is not None and self.sasl_mechanism not in _SASL_MECHANISMS:
            raise ConfigError(f"kafka.sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}")
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ConfigError("kafka.sasl_mechanism is required with a SASL security_protocol")
        if self.auto_offset_reset not in _OFFSET_RESET:
            raise ConfigError("kafka.auto_offset_reset must be 'earliest' or 'latest'")
        if not 1 <= self.max_poll_records <= 500:
            raise ConfigError("kafka.max_poll_records must be between 1 and 500 (keep batches small)")
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ConfigError("kafka.heartbeat_interval_ms must be at most a third of session_timeout_ms")
        if self.delivery_timeout_s <= 0 or self.max_block_ms <= 0:
            raise ConfigError("kafka.delivery_timeout_s and kafka.max_block_ms must be positive")

    # -- derived ----------------------------------------------------------------------------------------
    @property
    def source_topics(self) -> tuple[str, ...]:
        return tuple(self.hl7_topic if c == "hl7" else self.dicom_topic for c in self.consume)

    def raw_topic_for(self, content_type: str) -> str:
        if content_type == CONTENT_HL7V2:
            return self.hl7_topic
        if content_type == CONTENT_DICOM:
            return self.dicom_topic
        raise ValueError(f"no raw topic for content type {content_type!r}")

    def content_type_for(self, topic: str) -> str:
        return CONTENT_DICOM if topic == self.dicom_topic else CONTENT_HL7V2

    def dlq_topic_for(self, topic: str) -> str:
        return self.dlq_topic or f"{topic}.dlq"

    def security_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"security_protocol": self.security_protocol}
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                cfg[name] = getattr(self, name)
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            if self.sasl_password_env:
                password = os.environ.get(self.sasl_password_env)
                if password is None:
                    raise ConfigError(f"kafka.sasl_password_env: variable {self.sasl_password_env} is unset")
                cfg["sasl_plain_password"] = password
        return cfg

    def consumer_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "group_id": self.group_id,
            "enable_auto_commit": False,  # commits are explicit, of the confirmed watermark only
            "auto_offset_reset": self.auto_offset_reset,
            "max_poll_records": self.max_poll_records,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "request_timeout_ms": max(self.request_timeout_ms, self.session_timeout_ms + 5_000),
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            **self.security_config(),
        }

    def producer_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": self.linger_ms,
            "max_request_size": self.max_request_size,
            "compression_type": self.compression_type,
            "max_block_ms": self.max_block_ms,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            **self.security_config(),
        }

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> KafkaSettings:
        """Build from the ``kafka:`` section of a config YAML (flat keys named like the fields)."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError("the kafka section must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown kafka setting(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("bootstrap_servers", "consume"):
                value = _str_tuple(key, value)
            elif key in _INT_FIELDS:
                value = _int(key, value)
            elif key == "delivery_timeout_s":
                value = _float(key, value)
            elif value is not None and not isinstance(value, str):
                raise ConfigError(f"kafka.{key} must be a string")
            kwargs[key] = value
        return cls(**kwargs)


_INT_FIELDS = frozenset({
    "max_poll_records", "session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms", "linger_ms",
    "max_request_size", "max_block_ms", "request_timeout_ms", "bootstrap_timeout_ms",
})


def _str_tuple(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"kafka.{key} must be a string or a list of strings")


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"kafka.{key} must be an integer")
    return value


def _float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"kafka.{key} must be a number")
    return float(value)
