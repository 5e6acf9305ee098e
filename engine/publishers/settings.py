"""Settings of the FHIR REST publisher: the ``sinks.fhir`` section (registered in ``engine.settings.EXTERNAL``).

::

    sinks:
      fhir:
        model: rest                 # output model (pipelines.output.models): document | rest | ... (default document)
        base_url: https://fhir.example.org/fhir   # the environment variable FHIR_BASE_URL wins over this key
        concurrency: 4              # requests in flight per server (reports of different report ids in parallel)
        timeout: 30                 # seconds per request (connect, read, write, pool)
        validate: false             # outgoing validation gate (engine.publishers.gate): failures are dead letters
        supersede: true             # approach 1/2: earlier DocumentReference of the same report -> superseded
        max_retry_after: 300        # cap (s) on a server's Retry-After
        tls: {verify: true, ca_file: /etc/ssl/hub-ca.pem, client_cert: /etc/engine/client.pem, client_key: ...}
        auth:                       # optional
          type: client_credentials  # or smart_backend (SMART Backend Services, private_key_jwt RS384/ES384)
          token_url: https://auth.example.org/token
          client_id: engine         # or env FHIR_CLIENT_ID
          scope: system/*.cruds
          algorithm: RS384          # smart_backend only: RS384 | ES384
          key_id: k1                # smart_backend: JWT "kid" header

Secrets are read from the environment only, never from YAML: ``FHIR_CLIENT_SECRET`` (client_credentials),
``FHIR_PRIVATE_KEY`` (PEM text) or ``FHIR_PRIVATE_KEY_FILE`` (path to a PEM file) for smart_backend. The base URL
must be ``https`` unless it names a loopback host (``tls.allow_http: true`` allows plain HTTP elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.errors import ConfigError

__all__ = ["AuthSettings", "FhirSettings", "TlsSettings"]

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in section if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _str(section: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = section.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{where}.{key}: expected a non-empty string")
    return value


def _num(section: Mapping[str, Any], key: str, default: float, where: str, low: float, high: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{where}.{key}: expected a number between {low} and {high}, got {value!r}")
    return float(value)


def _bool(section: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class TlsSettings:
    verify: bool = True
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    allow_http: bool = False

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> TlsSettings:
        where = "sinks.fhir.tls"
        _keys(raw, {"verify", "ca_file", "client_cert", "client_key", "allow_http"}, where)
        paths: dict[str, Path | None] = {}
        for key in ("ca_file", "client_cert", "client_key"):
            value = _str(raw, key, where)
            paths[key] = Path(value) if value else None
            if value and not Path(value).is_file():
                raise ConfigError(f"{where}.{key}: no such file {value}")
        if paths["client_key"] and not paths["client_cert"]:
            raise ConfigError(f"{where}: client_key needs client_cert")
        return cls(_bool(raw, "verify", True, where), paths["ca_file"], paths["client_cert"], paths["client_key"],
                   _bool(raw, "allow_http", False, where))


@dataclass(frozen=True, slots=True)
class AuthSettings:
    type: str  # "client_credentials" | "smart_backend"
    token_url: str
    client_id: str
    scope: str | None = None
    algorithm: str = "RS384"
    key_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], environ: Mapping[str, str]) -> AuthSettings:
        where = "sinks.fhir.auth"
        _keys(raw, {"type", "token_url", "client_id", "scope", "algorithm", "key_id"}, where)
        kind = raw.get("type")
        if kind not in ("client_credentials", "smart_backend"):
            raise ConfigError(f"{where}.type: expected client_credentials or smart_backend, got {kind!r}")
        token_url = _str(raw, "token_url", where)
        if not token_url or urlsplit(token_url).scheme not in ("http", "https"):
            raise ConfigError(f"{where}.token_url: expected an http(s) URL")
        client_id = environ.get("FHIR_CLIENT_ID") or _str(raw, "client_id", where)
        if not client_id:
            raise ConfigError(f"{where}.client_id: required (or env FHIR_CLIENT_ID)")
        algorithm = str(raw.get("algorithm", "RS384"))
        if algorithm not in ("RS384", "ES384"):
            raise ConfigError(f"{where}.algorithm: expected RS384 or ES384 (SMART Backend Services), got {algorithm!r}")
        secret = key = None
        if kind == "client_credentials":
            secret = environ.get("FHIR_CLIENT_SECRET")
            if not secret:
                raise ConfigError(f"{where}: client_credentials needs the environment variable FHIR_CLIENT_SECRET")
        else:
            key = environ.get("FHIR_PRIVATE_KEY")
            key_file = environ.get("FHIR_PRIVATE_KEY_FILE")
            if not key and key_file:
                try:
                    key = Path(key_file).read_text(encoding="ascii")
                except OSError as exc:
                    raise ConfigError(f"FHIR_PRIVATE_KEY_FILE: cannot read {key_file} ({exc.strerror})") from exc
            if not key or "PRIVATE KEY" not in key:
                raise ConfigError(f"{where}: smart_backend needs a PEM private key in FHIR_PRIVATE_KEY or "
                                  "FHIR_PRIVATE_KEY_FILE")
        return cls(kind, token_url, client_id, _str(raw, "scope", where), algorithm, _str(raw, "key_id", where),
                   secret, key)


@dataclass(frozen=True, slots=True)
class FhirSettings:
    base_url: str
    model: str = "document"
    concurrency: int = 4
    timeout: float = 30.0
    validate: bool = False
    supersede: bool = True
    max_retry_after: float = 300.0
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> FhirSettings:
        """Parse ``sinks.fhir`` (ConfigError naming the key; engine.settings prefixes ``sinks.fhir: ``)."""
        try:
            return cls._parse(raw, os.environ if environ is None else environ)
        except ConfigError as exc:
            raise ConfigError(str(exc).removeprefix("sinks.fhir").lstrip(".: ") or "invalid") from exc

    @classmethod
    def _parse(cls, raw: Mapping[str, Any], env: Mapping[str, str]) -> FhirSettings:
        where = "sinks.fhir"
        _keys(raw, {"model", "base_url", "concurrency", "timeout", "validate", "supersede", "max_retry_after",
                    "tls", "auth"}, where)
        base = (env.get("FHIR_BASE_URL") or _str(raw, "base_url", where) or "").strip()
        if not base:
            raise ConfigError(f"{where}: no server: set the environment variable FHIR_BASE_URL (or base_url)")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: FHIR base URL must be an http(s) URL")
        tls = TlsSettings.from_mapping(_mapping(raw, "tls", where))
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK and not tls.allow_http:
            raise ConfigError(f"{where}: plain http to {parts.hostname} is refused (use https or tls.allow_http)")
        model = str(raw.get("model", "document"))
        from pipelines.output.models import model_names

        if model not in model_names():
            raise ConfigError(f"{where}.model: unknown model {model!r} (available: {', '.join(model_names())})")
        concurrency = raw.get("concurrency", 4)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
            raise ConfigError(f"{where}.concurrency: expected an integer between 1 and 64, got {concurrency!r}")
        auth_raw = _mapping(raw, "auth", where)
        validate = _bool(raw, "validate", False, where)
        if validate:
            from engine.publishers.gate import require_library

            require_library()
        return cls(
            base_url=base.rstrip("/"),
            model=model,
            concurrency=concurrency,
            timeout=_num(raw, "timeout", 30.0, where, 0.1, 3600.0),
            validate=validate,
            supersede=_bool(raw, "supersede", True, where),
            max_retry_after=_num(raw, "max_retry_after", 300.0, where, 0.0, 86400.0),
            tls=tls,
            auth=AuthSettings.from_mapping(auth_raw, env) if auth_raw else None,
        )

    def summary(self) -> dict[str, Any]:
        """PHI- and secret-free description (``engine validate``)."""
        return {"model": self.model, "base_url": self.base_url, "concurrency": self.concurrency,
                "validate": self.validate, "auth": self.auth.type if self.auth else None}


def _mapping(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key}: expected a mapping")
    return dict(value)
