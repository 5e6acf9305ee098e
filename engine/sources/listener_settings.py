"""Settings of the network listeners (MLLP, DICOM SCP): TLS, allow-lists, the exposure rule.

**Exposure rule (secure defaults).** A listener bound to anything but a loopback address (``0.0.0.0``,
``::``, a LAN address, a host name other than ``localhost``) must have TLS or an allow-list of peers
(MLLP ``allowed_peers``, DICOM ``allowed_calling_aes``), unless its section says ``insecure: true``
(e.g. inside a container whose network is the boundary). ``engine validate`` and ``engine run`` refuse
such a config with one line naming the section.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

__all__ = ["AckPolicy", "MllpSettings", "ScpSettings", "TlsSettings", "check_exposure", "is_loopback", "parse_networks"]

AckPolicy = Literal["stored", "converted"]


def check_keys(section: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{section}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(str(k) for k in d if k not in allowed)
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def int_value(section: str, key: str, value: Any, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{section}.{key}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{section}.{key}: must be {bound}, got {value}")
    return value


def str_value(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{section}.{key}: expected a non-empty string, got {value!r}")
    return value


def bool_value(section: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{section}.{key}: expected true or false, got {value!r}")
    return value


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for wildcards, LAN addresses and other names."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(section: str, host: str, *, tls: bool, allow_list: bool, insecure: bool) -> None:
    """The exposure rule of the module docstring; ValueError naming ``section``."""
    if is_loopback(host) or tls or allow_list or insecure:
        return
    raise ValueError(
        f"{section}.host: {host} is reachable from other machines but the listener has neither TLS nor an "
        f"allow-list; configure {section}.tls or an allow-list, or set {section}.insecure: true"
    )


def parse_networks(section: str, key: str, value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list of IP addresses or CIDR networks (``10.1.2.3``, ``10.1.0.0/16``, ``::1``)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"{section}.{key}: expected a list of IP addresses or networks, got {value!r}")
    out = []
    for item in value:
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{section}.{key}: {item!r} is not an IP address or network") from exc
    return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True)
class TlsSettings:
    """Server-side TLS: certificate chain and key (PEM), optional CA bundle to verify client certificates."""

    cert: str
    key: str
    ca: str | None = None
    require_client_cert: bool = False

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], section: str = "tls") -> TlsSettings:
        check_keys(section, d, {"cert", "key", "ca", "require_client_cert"})
        for key in ("cert", "key"):
            if key not in d:
                raise ValueError(f"{section}.{key}: required")
        ca = d.get("ca")
        require = bool_value(section, "require_client_cert", d.get("require_client_cert", False))
        if require and ca is None:
            raise ValueError(f"{section}.require_client_cert: needs {section}.ca to verify client certificates")
        return cls(
            cert=str_value(section, "cert", d["cert"]),
            key=str_value(section, "key", d["key"]),
            ca=None if ca is None else str_value(section, "ca", ca),
            require_client_cert=require,
        )

    def server_context(self) -> ssl.SSLContext:
        """Build the server ``SSLContext`` (TLS 1.2+); ValueError naming the file when one is unusable."""
        for label, path in (("cert", self.cert), ("key", self.key), ("ca", self.ca)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"tls.{label}: file not found: {path}")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
            if self.ca is not None:
                ctx.load_verify_locations(cafile=self.ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"tls: cannot load certificate/key ({self.cert}, {self.key}): {exc}") from exc
        if self.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif self.ca is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        else:
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


@dataclasses.dataclass(frozen=True, slots=True)
class MllpSettings:
    """Settings of the MLLP listener (``sources.mllp`` in the config; README "Settings reference")."""

    host: str = "127.0.0.1"
    port: int = 2575
    max_message_bytes: int = 16 * 1024 * 1024
    idle_timeout_s: float = 300.0  # 0 disables
    ack: AckPolicy = "converted"  # what AA means: "converted" (converted before the ACK) or "stored"
    allowed_peers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # empty: any peer
    tls: TlsSettings | None = None
    insecure: bool = False  # allow a non-loopback bind without TLS or allowed_peers
    name: str = "mllp"  # source name recorded with each landed message
    land_threads: int = 16  # concurrent land()/convert calls (one per connection at most)
    convert_processes: int = 0  # ack: converted: 0 converts in the land threads, N in a pool of N processes

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> MllpSettings:
        section = "mllp"
        if isinstance(d, Mapping) and "ack_mode" in d:
            raise ValueError(
                f"{section}.ack_mode: removed; the acknowledgement mode now follows each message's MSH-15/MSH-16 "
                f"(HL7 v2.5.1 2.9); use {section}.ack: stored|converted for what an accept means"
            )
        check_keys(section, d, {f.name for f in dataclasses.fields(cls)})
        kw: dict[str, Any] = {}
        if "host" in d:
            kw["host"] = str_value(section, "host", d["host"])
        if "port" in d:
            kw["port"] = int_value(section, "port", d["port"], low=0, high=65535)
        if "max_message_bytes" in d:
            kw["max_message_bytes"] = int_value(section, "max_message_bytes", d["max_message_bytes"], low=64)
        if "idle_timeout_s" in d:
            value = d["idle_timeout_s"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{section}.idle_timeout_s: expected a number >= 0 (0 disables), got {value!r}")
            kw["idle_timeout_s"] = float(value)
        if "ack" in d:
            if d["ack"] not in ("stored", "converted"):
                raise ValueError(f"{section}.ack: expected 'stored' or 'converted', got {d['ack']!r}")
            kw["ack"] = d["ack"]
        if d.get("allowed_peers") is not None:
            kw["allowed_peers"] = parse_networks(section, "allowed_peers", d["allowed_peers"])
        if d.get("tls") is not None:
            kw["tls"] = TlsSettings.from_mapping(d["tls"], f"{section}.tls")
        if "insecure" in d:
            kw["insecure"] = bool_value(section, "insecure", d["insecure"])
        if "name" in d:
            kw["name"] = str_value(section, "name", d["name"])
        if "land_threads" in d:
            kw["land_threads"] = int_value(section, "land_threads", d["land_threads"], low=1, high=256)
        if "convert_processes" in d:
            kw["convert_processes"] = int_value(section, "convert_processes", d["convert_processes"], low=0, high=64)
        settings = cls(**kw)
        check_exposure(
            section,
            settings.host,
            tls=settings.tls is not None,
            allow_list=bool(settings.allowed_peers),
            insecure=settings.insecure,
        )
        return settings

    def peer_allowed(self, address: str) -> bool:
        """True when ``allowed_peers`` is empty or holds ``address``."""
        if not self.allowed_peers:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allowed_peers)


def _ae_title(section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 16 or "\\" in value:
        raise ValueError(f"{section}.{key}: expected an AE title of 1 to 16 characters without '\\', got {value!r}")
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{section}.{key}: AE titles are printable ASCII, got {value!r}")
    return value.strip()


@dataclasses.dataclass(frozen=True, slots=True)
class ScpSettings:
    """Settings of the C-STORE SCP (``sources.dicom`` in the config)."""

    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "ENGINE"
    allowed_calling_aes: tuple[str, ...] = ()  # empty: any calling AE title
    max_pdu: int = 65536  # 0: unlimited
    tls: TlsSettings | None = None
    name: str = "dicom"  # source name recorded with each landed dataset
    ack: AckPolicy = "converted"  # what 0x0000 means: converted (else 0xC001/0xC002) or only stored
    insecure: bool = False  # allow a non-loopback bind without TLS or allowed_calling_aes

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> ScpSettings:
        section = "dicom"
        if not isinstance(d, Mapping):
            raise ValueError(f"{section}: expected a mapping, got {type(d).__name__}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in allowed)
        if unknown:
            raise ValueError(f"{section}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        kw: dict[str, Any] = {}
        if "host" in d:
            if not isinstance(d["host"], str) or not d["host"].strip():
                raise ValueError(f"{section}.host: expected a non-empty string, got {d['host']!r}")
            kw["host"] = d["host"]
        for key, low, high in (("port", 0, 65535), ("max_pdu", 0, 2**32 - 1)):
            if key in d:
                value = d[key]
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise ValueError(f"{section}.{key}: expected an integer between {low} and {high}, got {value!r}")
                kw[key] = value
        if "ae_title" in d:
            kw["ae_title"] = _ae_title(section, "ae_title", d["ae_title"])
        if d.get("allowed_calling_aes") is not None:
            aes = d["allowed_calling_aes"]
            if isinstance(aes, str) or not isinstance(aes, list | tuple):
                raise ValueError(f"{section}.allowed_calling_aes: expected a list of AE titles, got {aes!r}")
            kw["allowed_calling_aes"] = tuple(_ae_title(section, "allowed_calling_aes", a) for a in aes)
        if d.get("tls") is not None:
            kw["tls"] = TlsSettings.from_mapping(d["tls"], f"{section}.tls")
        if "name" in d:
            if not isinstance(d["name"], str) or not d["name"].strip():
                raise ValueError(f"{section}.name: expected a non-empty string, got {d['name']!r}")
            kw["name"] = d["name"]
        if "ack" in d:
            if d["ack"] not in ("stored", "converted"):
                raise ValueError(f"{section}.ack: expected 'stored' or 'converted', got {d['ack']!r}")
            kw["ack"] = d["ack"]
        if "insecure" in d:
            kw["insecure"] = bool_value(section, "insecure", d["insecure"])
        settings = cls(**kw)
        check_exposure(
            section,
            settings.host,
            tls=settings.tls is not None,
            allow_list=bool(settings.allowed_calling_aes),
            insecure=settings.insecure,
        )
        return settings
