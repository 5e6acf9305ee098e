"""The ``console`` settings section (registered in :data:`engine.settings.EXTERNAL`).

::

    console:
      host: 127.0.0.1            # default; loopback only unless you put TLS in front (see README)
      port: 8081
      token_env: ENGINE_CONSOLE_TOKEN      # default: a bearer token from this environment variable ...
      token_roles: [operator]              # ... for the user "token" with these roles
      users:                               # and/or named users (HTTP Basic and/or bearer token)
        - {name: alice, password_env: CONSOLE_ALICE_PASSWORD, roles: [operator, phi]}
        - {name: monitor, token_env: CONSOLE_MONITOR_TOKEN, roles: []}
      audit_log: var/audit/console.jsonl   # default: console-audit.jsonl beside the message store
      page_size: 50
      tls: {cert: cert.pem, key: key.pem}  # HTTPS; required for a non-loopback host unless insecure: true

Secrets are never read from the YAML, only from the named environment variables, when the settings are
loaded (so ``engine validate`` reports a missing one). Roles: every authenticated user may search and
read PHI-free metadata; ``operator`` may reprocess and discard; ``phi`` may view original bytes and
report text. A console without any usable credential is a :class:`engine.errors.ConfigError`: the
engine refuses to start rather than serve an open console. ``enabled: false`` turns the section off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

__all__ = ["ROLES", "ConsoleSettings", "ConsoleUser"]

ROLES = ("viewer", "operator", "phi")
_KEYS = {"enabled", "host", "port", "token_env", "token_roles", "users", "audit_log", "page_size", "tls", "insecure"}
_LOOPBACK = ("127.", "::1", "localhost")
_USER_KEYS = {"name", "password_env", "token_env", "roles"}
DEFAULT_TOKEN_ENV = "ENGINE_CONSOLE_TOKEN"


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    name: str
    roles: frozenset[str]
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    users: tuple[ConsoleUser, ...]
    host: str = "127.0.0.1"
    port: int = 8081
    audit_log: Path | None = None  # None: beside the message store
    page_size: int = 50
    tls_cert: Path | None = None  # PEM certificate chain (HTTPS when set)
    tls_key: Path | None = None  # PEM private key

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> ConsoleSettings | None:
        """Validate the section; ``None`` when ``enabled: false``. Raises :class:`ConfigError`."""
        env = os.environ if environ is None else environ
        unknown = sorted(str(k) for k in data if k not in _KEYS)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KEYS))})")
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"enabled: expected true or false, got {enabled!r}")
        if not enabled:
            return None
        host = data.get("host", "127.0.0.1")
        if not isinstance(host, str) or not host.strip():
            raise ConfigError("host: expected a host name or address")
        port = data.get("port", 8081)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port: expected an integer between 0 and 65535, got {port!r}")
        page_size = data.get("page_size", 50)
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 500:
            raise ConfigError(f"page_size: expected an integer between 1 and 500, got {page_size!r}")
        audit = data.get("audit_log")
        if audit is not None and (not isinstance(audit, str) or not audit.strip()):
            raise ConfigError("audit_log: expected a file path")
        users: list[ConsoleUser] = []
        token_env = data.get("token_env", DEFAULT_TOKEN_ENV)
        if not isinstance(token_env, str) or not token_env:
            raise ConfigError("token_env: expected an environment variable name")
        if env.get(token_env):
            users.append(ConsoleUser("token", _roles(data.get("token_roles", ["operator"]), "token_roles"),
                                     token=env[token_env]))
        raw_users = data.get("users") or []
        if not isinstance(raw_users, list):
            raise ConfigError("users: expected a list of {name, password_env and/or token_env, roles}")
        for i, raw in enumerate(raw_users):
            users.append(_user(raw, f"users[{i}]", env))
        names = [u.name for u in users]
        if len(set(names)) != len(names):
            raise ConfigError("users: user names must be unique (\"token\" is the ENGINE_CONSOLE_TOKEN user)")
        if not users:
            raise ConfigError(
                f"no credentials: the console needs authentication; set {token_env} (a bearer token) or "
                "configure users with password_env/token_env naming environment variables that are set"
            )
        cert, key = _tls(data.get("tls"))
        insecure = data.get("insecure", False)
        if not isinstance(insecure, bool):
            raise ConfigError(f"insecure: expected true or false, got {insecure!r}")
        if cert is None and not insecure and not host.startswith(_LOOPBACK):
            raise ConfigError(
                f"host {host!r} is not a loopback address: passwords and tokens would cross the network in clear; "
                "configure tls: {cert, key}, or terminate TLS in a proxy on this host and set insecure: true"
            )
        return cls(
            users=tuple(users),
            host=host,
            port=port,
            audit_log=Path(audit) if audit else None,
            page_size=page_size,
            tls_cert=cert,
            tls_key=key,
        )


def _tls(raw: Any) -> tuple[Path | None, Path | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, Mapping) or set(raw) != {"cert", "key"}:
        raise ConfigError("tls: expected {cert: PEM certificate file, key: PEM private key file}")
    paths = []
    for name in ("cert", "key"):
        value = raw[name]
        if not isinstance(value, str) or not Path(value).is_file():
            raise ConfigError(f"tls.{name}: no such file {value!r}")
        paths.append(Path(value))
    return paths[0], paths[1]


def _roles(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise ConfigError(f"{where}: expected a list of roles ({', '.join(ROLES)})")
    bad = sorted(set(value) - set(ROLES))
    if bad:
        raise ConfigError(f"{where}: unknown role(s) {', '.join(bad)} (known: {', '.join(ROLES)})")
    return frozenset(value)


def _user(raw: Any, where: str, env: Mapping[str, str]) -> ConsoleUser:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(str(k) for k in raw if k not in _USER_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_USER_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise ConfigError(f"{where}.name: expected a user name without ':'")
    secrets: dict[str, str] = {}
    for key in ("password_env", "token_env"):
        var = raw.get(key)
        if var is None:
            continue
        if not isinstance(var, str) or not var:
            raise ConfigError(f"{where}.{key}: expected an environment variable name")
        value = env.get(var, "")
        if not value:
            raise ConfigError(f"{where}.{key}: environment variable {var} is not set (secrets come from there)")
        secrets[key] = value
    if not secrets:
        raise ConfigError(f"{where}: give password_env and/or token_env (secrets never go in the YAML)")
    return ConsoleUser(
        name=name.strip(),
        roles=_roles(raw.get("roles", []), f"{where}.roles"),
        password=secrets.get("password_env"),
        token=secrets.get("token_env"),
    )
