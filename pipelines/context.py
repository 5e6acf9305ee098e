"""Explicit mapping context: everything a pure mapping needs that is not in the message itself.

Per-sender profiles answer the site questions the standards leave open: which field carries the
accession number and which issuer namespace it belongs to, the patient-identifier namespace, the
time-zone offset for date/times sent without one, the character set of HL7 messages sent without MSH-18, and
the organisation name of the sender.
A profile applies to messages whose MSH-3 (sending application) and/or MSH-4 (sending facility)
match; DICOM SRs match on Institution Name or on the ``dicom`` selector.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_SYSTEM_BASE", "MappingContext", "SenderProfile", "charset_codec"]

#: Namespace root used to build identifier systems when a sender has no configured issuer.
#: Deployments should configure real issuer URIs/OIDs per sender; this keeps identifiers valid and
#: deterministic without inventing an authority.
DEFAULT_SYSTEM_BASE = "urn:imaging-engine:sid"

ACCESSION_FIELDS = ("OBR-18", "OBR-19", "OBR-20", "OBR-3", "OBR-2", "ORC-3", "ORC-2", "IPC-1")


@dataclass(frozen=True, slots=True)
class SenderProfile:
    """Site rules for one sender (see module docstring)."""

    name: str = "default"
    sending_application: str | None = None  # MSH-3.1 to match (None = any)
    sending_facility: str | None = None  # MSH-4.1 to match (None = any)
    accession_field: str = "OBR-18"  # where the accession number is (ACCESSION_FIELDS)
    accession_system: str | None = None  # issuer namespace URI of the accession (None = derived)
    patient_id_system: str | None = None  # namespace for PID-3 without a usable assigning authority
    organization_name: str | None = None  # performing organisation name (None = MSH-4 / Institution)
    timezone: str | None = None  # "+01:00": offset for times that carry none (None: MSH-7's, else the default)
    # character set of HL7 messages whose MSH-18 is empty and whose bytes are not UTF-8: a table 0211 value
    # (8859/2, ...) or a codec name (windows-1250); None: Windows-1252/Latin-1
    charset: str | None = None

    def matches(self, application: str, facility: str) -> bool:
        if self.sending_application is not None and self.sending_application != application:
            return False
        return not (self.sending_facility is not None and self.sending_facility != facility)


@dataclass(frozen=True, slots=True)
class MappingContext:
    """Passed explicitly to every mapping call; immutable and free of I/O."""

    senders: tuple[SenderProfile, ...] = ()
    default: SenderProfile = field(default_factory=SenderProfile)
    system_base: str = DEFAULT_SYSTEM_BASE
    default_timezone: str = "+00:00"  # used for `instant` fields when the source has no offset
    max_message_bytes: int = 16 * 1024 * 1024
    #: per output model, its options (``mapping.models``): ``imr: {wado_rs: {SITE|default: URL}, pdf: bool}``,
    #: ``harmonized: {patient_update: complete|never}``; read by the model's shaper (pipelines.output.models)
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def model_options(self, model: str) -> Mapping[str, Any]:
        """The options configured for output ``model`` (empty when none)."""
        return self.models.get(model, {})

    def sender(self, application: str, facility: str) -> SenderProfile:
        for profile in self.senders:
            if profile.matches(application, facility):
                return profile
        return self.default

    def timezone_for(self, profile: SenderProfile) -> str:
        return profile.timezone or self.default_timezone

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> MappingContext:
        """Build from the ``mapping:`` section of a config YAML (validated, unknown keys rejected)."""
        data = dict(data or {})
        allowed = {"senders", "default", "system_base", "default_timezone", "max_message_bytes", "models"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown mapping settings: {', '.join(sorted(unknown))}")
        senders = tuple(_profile(s, f"senders[{i}]") for i, s in enumerate(data.get("senders") or []))
        default_tz = str(data.get("default_timezone", "+00:00"))
        if not _valid_offset(default_tz):  # an IANA name ("Europe/Berlin") would silently drop every instant
            raise ValueError("default_timezone must be a UTC offset like +01:00 (zone names are not supported)")
        default = _profile(data.get("default") or {}, "default")
        return cls(
            senders=senders,
            default=default,
            system_base=str(data.get("system_base", DEFAULT_SYSTEM_BASE)),
            default_timezone=default_tz,
            max_message_bytes=int(data.get("max_message_bytes", 16 * 1024 * 1024)),
            models=_models(data.get("models") or {}),
        )


#: output model -> the option keys its shaper reads (see pipelines.output.imr.ImrOptions, harmonized.HarmonizedOptions)
MODEL_OPTIONS = {"imr": {"wado_rs", "pdf"}, "harmonized": {"patient_update"}}


def _models(data: Any) -> dict[str, dict[str, Any]]:
    """``mapping.models``: per model, its options (unknown models or keys are errors)."""
    if not isinstance(data, Mapping):
        raise ValueError("models: expected a mapping of model name to options")
    out: dict[str, dict[str, Any]] = {}
    for name, options in data.items():
        if name not in MODEL_OPTIONS:
            raise ValueError(f"models.{name}: no options for this model (known: {', '.join(sorted(MODEL_OPTIONS))})")
        if not isinstance(options, Mapping):
            raise ValueError(f"models.{name}: expected a mapping")
        unknown = set(options) - MODEL_OPTIONS[name]
        if unknown:
            raise ValueError(f"models.{name}: unknown settings: {', '.join(sorted(unknown))}")
        wado = options.get("wado_rs", {})
        if not isinstance(wado, Mapping) or not all(
            isinstance(v, str) and v.startswith(("https://", "http://")) for v in wado.values()
        ):
            raise ValueError(f"models.{name}.wado_rs: expected {{site or default: http(s) URL}}")
        out[str(name)] = {**options, "wado_rs": {str(k): str(v) for k, v in wado.items()}} if wado else dict(options)
    return out


def _profile(data: Mapping[str, Any], where: str) -> SenderProfile:
    fields = set(SenderProfile.__dataclass_fields__)
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    values: dict[str, str | None] = {k: (None if v is None else str(v)) for k, v in data.items()}
    profile = SenderProfile(**values)  # type: ignore[arg-type]
    if profile.accession_field not in ACCESSION_FIELDS:
        raise ValueError(f"{where}: accession_field must be one of {', '.join(ACCESSION_FIELDS)}")
    if profile.charset is not None and not _known_charset(profile.charset):
        raise ValueError(f"{where}: charset must be an HL7 table 0211 value (8859/2, ...) or a codec (windows-1250)")
    if profile.timezone is not None and not _valid_offset(profile.timezone):
        raise ValueError(f"{where}: timezone must be a UTC offset like +01:00 (zone names are not supported)")
    return profile


def charset_codec(value: str) -> str | None:
    """The Python codec of a profile ``charset``: an HL7 table 0211 value, else a codec name; None if neither."""
    import codecs

    from pipelines.hl7v2.er7 import CHARSETS  # the table lives with the tokenizer that uses it

    known = CHARSETS.get(value.strip().upper())
    if known:
        return known
    try:
        return codecs.lookup(value.strip()).name
    except LookupError:
        return None


def _known_charset(value: str) -> bool:
    return charset_codec(value) is not None


def _valid_offset(value: str) -> bool:
    """``±hh:mm`` with hh ≤ 14 and mm < 60 (ISO 8601 / FHIR dateTime offsets)."""
    if not (len(value) == 6 and value[0] in "+-" and value[3] == ":" and value.replace(":", "")[1:].isdigit()):
        return False
    hours, minutes = int(value[1:3]), int(value[4:6])
    return hours <= 14 and minutes < 60 and not (hours == 14 and minutes)
