"""Deployment settings: one YAML file per deployment, validated up front (:class:`engine.errors.ConfigError`).

Sections (unknown keys are errors)::

    mapping:   sender profiles etc., passed to pipelines.context.MappingContext.from_mapping; absent or empty:
               the shipped config/mapping-senders.yaml, the same profiles `engine map` loads by default
    store:     {path}                      SQLite message store; a directory gets "messages.db" inside
    sources:   inbox: {path, settle_seconds, scan_interval, max_bytes}
               mllp:  engine.sources.mllp.MllpSettings.from_mapping
               dicom: engine.sources.dicom_scp.ScpSettings.from_mapping
               kafka: engine.kafka.settings.KafkaSettings.from_mapping (raw topics; the raw topic is the store)
    sinks:     folder: {path}   kafka: KafkaSettings.from_mapping
               fhir: engine.publishers.settings.FhirSettings.from_mapping (model, FHIR_BASE_URL, auth, TLS, ...)
    dlq:       folder: {path}   kafka: KafkaSettings.from_mapping      (one of them is required)
    worker:    {batch_size, poll_timeout, drain_timeout, processes (conversion processes, 0 = in process),
                retry: {attempts, initial, maximum, jitter, backpressure}}
    health:    {host, port, live_timeout}
    logging:   {level, format: json|text}
    console:   engine.console.settings.ConsoleSettings.from_mapping (message console + API; off when absent)
    kafka:     shared KafkaSettings keys; sources.kafka / sinks.kafka / dlq.kafka are merged over it
               (``sinks: {kafka: {}}`` means "publish with the shared Kafka settings")

Relative paths in a config file (the keys in :data:`PATH_KEYS`: folders, the store, TLS and Kafka SSL files)
are relative to the config file's folder, so a deployment does not depend on the directory it is started
from (:func:`load_settings`; :func:`parse_settings` on a plain mapping leaves them as they are). A few keys can
be overridden from the environment: ``ENGINE_STORE_PATH``, ``ENGINE_INBOX_PATH``, ``ENGINE_OUTBOX_PATH``,
``ENGINE_DLQ_PATH``, ``ENGINE_HEALTH_HOST``, ``ENGINE_HEALTH_PORT``, ``ENGINE_MLLP_PORT``, ``ENGINE_DICOM_PORT``,
``ENGINE_LOG_LEVEL`` (secrets belong in the environment, never in YAML); relative paths given there are
relative to the working directory, like any path on a command line. Without ``store.path`` the store is
``var/store`` under the working directory.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError
from engine.sources.inbox import InboxSettings
from engine.worker import RetryPolicy
from pipelines.context import MappingContext

__all__ = [
    "PATH_KEYS",
    "FolderSettings",
    "HealthSettings",
    "LoggingSettings",
    "Settings",
    "StoreSettings",
    "WorkerSettings",
    "anchor_paths",
    "load_settings",
    "parse_settings",
]

TOP_LEVEL = {"mapping", "store", "sources", "sinks", "dlq", "worker", "health", "logging", "kafka", "console"}
DEFAULT_STORE = Path("var/store")

#: section -> (module, class) of settings parsers owned by the transport modules (imported lazily).
EXTERNAL = {
    "mllp": ("engine.sources.mllp", "MllpSettings"),
    "dicom": ("engine.sources.dicom_scp", "ScpSettings"),
    "kafka": ("engine.kafka.settings", "KafkaSettings"),
    "fhir": ("engine.publishers.settings", "FhirSettings"),
    "console": ("engine.console.settings", "ConsoleSettings"),
}

_KAFKA_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
_TLS_FILES = ("cert", "key", "ca")
#: (section path, keys) of every setting that names a file or folder: anchored at the config file's folder.
PATH_KEYS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("store",), ("path",)),
    (("sources", "inbox"), ("path",)),
    (("sinks", "folder"), ("path",)),
    (("dlq", "folder"), ("path",)),
    (("sources", "mllp", "tls"), _TLS_FILES),
    (("sources", "dicom", "tls"), _TLS_FILES),
    (("kafka",), _KAFKA_FILES),
    (("sources", "kafka"), _KAFKA_FILES),
    (("sinks", "kafka"), _KAFKA_FILES),
    (("dlq", "kafka"), _KAFKA_FILES),
    (("sinks", "fhir", "tls"), ("ca_file", "client_cert", "client_key")),
    (("console",), ("audit_log",)),
    (("console", "tls"), ("cert", "key")),
)

#: environment variable -> (section path, key, converter)
ENV_OVERRIDES: dict[str, tuple[tuple[str, ...], str, Callable[[str], Any]]] = {
    "ENGINE_STORE_PATH": (("store",), "path", str),
    "ENGINE_INBOX_PATH": (("sources", "inbox"), "path", str),
    "ENGINE_OUTBOX_PATH": (("sinks", "folder"), "path", str),
    "ENGINE_DLQ_PATH": (("dlq", "folder"), "path", str),
    "ENGINE_HEALTH_HOST": (("health",), "host", str),
    "ENGINE_HEALTH_PORT": (("health",), "port", int),
    "ENGINE_MLLP_PORT": (("sources", "mllp"), "port", int),
    "ENGINE_DICOM_PORT": (("sources", "dicom"), "port", int),
    "ENGINE_LOG_LEVEL": (("logging",), "level", str),
    "ENGINE_CONSOLE_PORT": (("console",), "port", int),
}


@dataclass(frozen=True, slots=True)
class StoreSettings:
    path: Path  # the SQLite file


@dataclass(frozen=True, slots=True)
class FolderSettings:
    path: Path


@dataclass(frozen=True, slots=True)
class HealthSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    live_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    batch_size: int = 100
    poll_timeout: float = 0.5
    drain_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    processes: int = 1  # conversion processes (engine.pooled); 0 = convert in the service's own process


@dataclass(frozen=True, slots=True)
class Settings:
    mapping: MappingContext
    store: StoreSettings | None = None
    inbox: InboxSettings | None = None
    mllp: Any = None  # engine.sources.mllp.MllpSettings
    dicom: Any = None  # engine.sources.dicom_scp.ScpSettings
    kafka_source: Any = None  # engine.kafka.settings.KafkaSettings
    folder_sink: FolderSettings | None = None
    kafka_sink: Any = None
    fhir_sink: Any = None  # engine.publishers.settings.FhirSettings
    dlq_folder: FolderSettings | None = None
    dlq_kafka: Any = None
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    health: HealthSettings | None = None
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    source_file: Path | None = None
    console: Any = None  # engine.console.settings.ConsoleSettings (None: no console)

    @property
    def model(self) -> str:
        """The output model (pipelines.output.models): ``sinks.fhir.model``, else ``document``."""
        return str(self.fhir_sink.model) if self.fhir_sink is not None else "document"

    def summary(self) -> dict[str, Any]:
        """A PHI-free description for ``engine validate`` and the start-up log line."""
        sources = [n for n, v in (("inbox", self.inbox), ("mllp", self.mllp), ("dicom", self.dicom),
                                  ("kafka", self.kafka_source)) if v is not None]
        return {
            "sources": sources,
            "store": str(self.store.path) if self.store else None,
            "sinks": [n for n, v in (("folder", self.folder_sink), ("kafka", self.kafka_sink),
                                     ("fhir", self.fhir_sink)) if v is not None],
            "model": self.model,
            "dlq": "folder" if self.dlq_folder else "kafka",
            "health": f"{self.health.host}:{self.health.port}" if self.health else None,
            "senders": len(self.mapping.senders),
            "console": f"{self.console.host}:{self.console.port}" if self.console else None,
        }


# -- helpers --------------------------------------------------------------------------------------


def _section(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{key}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def _keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in section if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _number(section: Mapping[str, Any], key: str, default: float, where: str, *, low: float = 0.0) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ConfigError(f"{where}.{key}: expected a number >= {low}, got {value!r}")
    return float(value)


def _integer(section: Mapping[str, Any], key: str, default: int, where: str, *, low: int, high: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}.{key}: expected an integer between {low} and {high}, got {value!r}")
    return value


def _folder(section: Mapping[str, Any], where: str) -> FolderSettings:
    _keys(section, {"path"}, where)
    path = section.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}.path: expected a directory path")
    return FolderSettings(Path(path))


def _external(kind: str, section: Mapping[str, Any], where: str) -> Any:
    module_name, class_name = EXTERNAL[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: this installation has no {kind} support ({module_name}: {exc})") from exc
    parser = getattr(module, class_name, None)
    if parser is None:
        raise ConfigError(f"{where}: {module_name} has no {class_name}")
    try:
        return parser.from_mapping(dict(section))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _kafka_section(data: Mapping[str, Any], parent: Mapping[str, Any], where: str) -> Any:
    common = _section(data, "kafka", "")
    own = _section(parent, "kafka", where.rsplit(".", 1)[0] + ".")
    return _external("kafka", {**common, **own}, where)


def _store(section: Mapping[str, Any]) -> StoreSettings:
    _keys(section, {"path"}, "store")
    raw = section.get("path", str(DEFAULT_STORE))
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError("store.path: expected a directory or a .db file path")
    path = Path(raw)
    if path.suffix not in (".db", ".sqlite", ".sqlite3"):
        path = path / "messages.db"
    return StoreSettings(path)


def anchor_paths(data: Any, base: Path) -> Any:
    """A copy of the loaded YAML ``data`` whose relative paths at :data:`PATH_KEYS` are joined to ``base``
    (the config file's folder) and normalised; absolute paths and other values are unchanged."""
    if not isinstance(data, Mapping):
        return data
    anchored: dict[str, Any] = copy.deepcopy(dict(data))
    for sections, keys in PATH_KEYS:
        node: Any = anchored
        for name in sections:
            node = node.get(name) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        for key in keys:
            value = node.get(key)
            if isinstance(value, str) and value.strip() and not os.path.isabs(value):
                node[key] = os.path.normpath(base / value)
    return anchored


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply ENGINE_* overrides; transports and folders are only overridden when configured."""
    for var, (sections, key, convert) in ENV_OVERRIDES.items():
        if var not in environ:
            continue
        create = sections[0] in ("store", "health", "logging")
        node: dict[str, Any] | None = data
        for name in sections:
            assert node is not None
            child = node.get(name)
            if child is None and create:
                child = node[name] = {}
            node = child if isinstance(child, dict) else None
            if node is None:
                break
        if node is not None:
            try:
                node[key] = convert(environ[var])
            except ValueError as exc:
                raise ConfigError(f"{var}: {exc}") from exc


# -- parsing --------------------------------------------------------------------------------------


def parse_settings(data: Any, environ: Mapping[str, str] | None = None, source_file: Path | None = None) -> Settings:
    """Validate a loaded YAML document (a mapping) and build :class:`Settings`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    data = dict(data)
    _keys(data, TOP_LEVEL, "config")
    _apply_env(data, os.environ if environ is None else environ)

    try:
        raw_mapping = _section(data, "mapping", "")
        if raw_mapping:
            mapping = MappingContext.from_mapping(raw_mapping)
        else:  # no `mapping:` section: the shipped sender profiles, exactly as `engine map` loads them
            from engine.cmd_map import load_mapping_context

            mapping = load_mapping_context(None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"mapping: {exc}") from exc

    sources = _section(data, "sources", "")
    _keys(sources, {"inbox", "mllp", "dicom", "kafka"}, "sources")
    inbox = InboxSettings.from_mapping(_section(sources, "inbox", "sources.")) if "inbox" in sources else None
    mllp = _external("mllp", _section(sources, "mllp", "sources."), "sources.mllp") if "mllp" in sources else None
    dicom = _external("dicom", _section(sources, "dicom", "sources."), "sources.dicom") if "dicom" in sources else None
    kafka_source = _kafka_section(data, sources, "sources.kafka") if "kafka" in sources else None
    if not (inbox or mllp or dicom or kafka_source):
        raise ConfigError("sources: configure at least one of inbox, mllp, dicom, kafka")

    sinks = _section(data, "sinks", "")
    _keys(sinks, {"folder", "kafka", "fhir"}, "sinks")
    folder_sink = _folder(_section(sinks, "folder", "sinks."), "sinks.folder") if "folder" in sinks else None
    kafka_sink = _kafka_section(data, sinks, "sinks.kafka") if "kafka" in sinks else None
    fhir_sink = _external("fhir", _section(sinks, "fhir", "sinks."), "sinks.fhir") if "fhir" in sinks else None
    if not (folder_sink or kafka_sink or fhir_sink):
        raise ConfigError("sinks: configure at least one of folder, kafka, fhir")

    dlq = _section(data, "dlq", "")
    _keys(dlq, {"folder", "kafka"}, "dlq")
    dlq_folder = _folder(_section(dlq, "folder", "dlq."), "dlq.folder") if "folder" in dlq else None
    dlq_kafka = _kafka_section(data, dlq, "dlq.kafka") if "kafka" in dlq else None
    if dlq_folder is None and dlq_kafka is None:
        raise ConfigError("dlq: a dead-letter destination is required (dlq.folder.path or dlq.kafka)")
    if dlq_folder is not None and dlq_kafka is not None:
        raise ConfigError("dlq: configure exactly one of folder, kafka")

    needs_store = kafka_source is None
    console = _external("console", _section(data, "console", ""), "console") if "console" in data else None
    if console is not None and kafka_source is not None:
        raise ConfigError("console: needs the message store; with sources.kafka the raw topics are the store")
    store = _store(_section(data, "store", "")) if needs_store or "store" in data else None

    worker_raw = _section(data, "worker", "")
    _keys(worker_raw, {"batch_size", "poll_timeout", "drain_timeout", "processes", "retry"}, "worker")
    retry_raw = _section(worker_raw, "retry", "worker.")
    _keys(retry_raw, {"attempts", "initial", "maximum", "jitter", "backpressure"}, "worker.retry")
    retry = RetryPolicy(
        attempts=_integer(retry_raw, "attempts", 5, "worker.retry", low=1, high=100),
        initial=_number(retry_raw, "initial", 0.1, "worker.retry"),
        maximum=_number(retry_raw, "maximum", 5.0, "worker.retry"),
        jitter=_number(retry_raw, "jitter", 0.1, "worker.retry"),
        backpressure=_number(retry_raw, "backpressure", 5.0, "worker.retry", low=0.01),
    )
    worker = WorkerSettings(
        batch_size=_integer(worker_raw, "batch_size", 100, "worker", low=1, high=10_000),
        poll_timeout=_number(worker_raw, "poll_timeout", 0.5, "worker", low=0.01),
        drain_timeout=_number(worker_raw, "drain_timeout", 10.0, "worker"),
        retry=retry,
        processes=_integer(worker_raw, "processes", 1, "worker", low=0, high=256),
    )

    health = None
    if "health" in data:
        raw = _section(data, "health", "")
        _keys(raw, {"host", "port", "live_timeout"}, "health")
        host = raw.get("host", "127.0.0.1")
        if not isinstance(host, str) or not host:
            raise ConfigError("health.host: expected a host name or address")
        health = HealthSettings(
            host=host,
            port=_integer(raw, "port", 8080, "health", low=0, high=65535),
            live_timeout=_number(raw, "live_timeout", 30.0, "health", low=1.0),
        )

    log_raw = _section(data, "logging", "")
    _keys(log_raw, {"level", "format"}, "logging")
    level = str(log_raw.get("level", "INFO")).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"logging.level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    fmt = str(log_raw.get("format", "json"))
    if fmt not in ("json", "text"):
        raise ConfigError(f"logging.format: expected json or text, got {fmt!r}")

    return Settings(
        mapping=mapping,
        store=store,
        inbox=inbox,
        mllp=mllp,
        dicom=dicom,
        kafka_source=kafka_source,
        folder_sink=folder_sink,
        kafka_sink=kafka_sink,
        fhir_sink=fhir_sink,
        dlq_folder=dlq_folder,
        dlq_kafka=dlq_kafka,
        worker=worker,
        health=health,
        logging=LoggingSettings(level=level, format=fmt),
        source_file=source_file,
        console=console,
    )


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate one deployment YAML; every problem is a one-line :class:`ConfigError`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{file}: not valid YAML{where}") from exc
    try:
        return parse_settings(anchor_paths(data, file.parent.absolute()), environ, file)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
