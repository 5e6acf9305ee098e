"""Deterministic identifiers: uuid5 over business identifiers, so a replay produces identical output."""

from __future__ import annotations

import functools
import hashlib
import re
import uuid

__all__ = ["NAMESPACE", "digest", "hashed_key", "slug", "uid_ok", "urn", "uuid_for"]

#: Fixed namespace of this engine's uuid5 ids (never change it: ids would change on replay).
NAMESPACE = uuid.UUID("6f0c7f4e-2b52-5a8e-9d3c-1e0b7a9c4d21")


_NS_BYTES = NAMESPACE.bytes


# RFC 9562 variant bits (10xx) on the first hex digit of the clock_seq field: (digit & 0x3) | 0x8.
_VARIANT = {f"{i:x}": f"{(i & 0x3) | 0x8:x}" for i in range(16)}


def uuid_for(*parts: str) -> str:
    """uuid5 (RFC 9562 §5.5) of the parts joined with a separator that cannot occur in them unescaped.
    Computed directly from the SHA-1 hex digest (identical to ``uuid.uuid5``, several times cheaper: it is on
    the hot path): the version digit is ``5``, the variant bits are set on the 17th digit."""
    x = hashlib.sha1(_NS_BYTES + "\x1f".join(parts).encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


def urn(resource_id: str) -> str:
    return f"urn:uuid:{resource_id}"


def digest(*parts: str, length: int = 16) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:length]


def hashed_key(system: str, value: str) -> str:
    """Partition key: SHA-256 of ``system|value`` (no PHI on the wire or in broker tooling)."""
    return hashlib.sha256(f"{system}|{value}".encode()).hexdigest()


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@functools.lru_cache(maxsize=1024)  # pure; a feed repeats its facility and authority names
def slug(value: str) -> str:
    """A URI-safe path segment for a namespace name (e.g. an HD namespace id like ``ABC HOSP``)."""
    cleaned = _SLUG.sub("-", value.strip()).strip("-")
    return cleaned or "unknown"


_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def uid_ok(uid: str) -> bool:
    """DICOM UID syntax (PS3.5 9.1): digits and dots, no leading zeros in a component, at most 64 chars."""
    return len(uid) <= 64 and bool(_UID.match(uid))
