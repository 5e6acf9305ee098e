"""``engine validate`` for FHIR deployments: which interactions the chosen model needs and the server lacks.

The server's CapabilityStatement (``GET [base]/metadata``, FHIR R5 §3.2.0.3) is read once; each entry of the
model's ``needs`` (:mod:`pipelines.output.models`) is checked against ``rest[mode=server]``:

* ``system:<code>``: ``rest.interaction.code`` (``transaction``, ``batch``, ...);
* ``<Type>:<code>``: ``rest.resource[type].interaction.code`` (``update``, ``create``, ``search-type``, ...);
* ``<Type>:update-create`` / ``conditional-create`` / ``conditional-update``: ``resource.updateCreate``,
  ``conditionalCreate``, ``conditionalUpdate``: only an explicit ``false`` (``not-supported``) is a gap, because
  servers often leave these flags out while allowing the interaction (HAPI omits ``updateCreate`` although it
  accepts client-assigned ids); a request the server then refuses is still classified at run time.

A gap is one line, e.g. ``DocumentReference:search-type: the server does not declare it``.
"""

from __future__ import annotations

from typing import Any

from engine.errors import ConfigError, EngineError
from engine.publishers.client import FhirClient
from engine.publishers.settings import FhirSettings
from pipelines.output.models import get_model

__all__ = ["check_server", "missing_interactions"]

_FLAGS = {"update-create": "updateCreate", "conditional-create": "conditionalCreate",
          "conditional-update": "conditionalUpdate", "conditional-delete": "conditionalDelete"}


def missing_interactions(capability: dict[str, Any], needs: tuple[str, ...]) -> list[str]:
    """One line per needed interaction the CapabilityStatement does not declare."""
    servers = [r for r in capability.get("rest", []) if r.get("mode") == "server"]
    if not servers:
        return ["the CapabilityStatement has no rest[mode=server]"]
    rest = servers[0]
    system = {i.get("code") for i in rest.get("interaction", [])}
    resources = {r.get("type"): r for r in rest.get("resource", [])}
    gaps: list[str] = []
    for need in needs:
        scope, _, code = need.partition(":")
        if scope == "system":
            ok = code in system
        elif scope not in resources:
            gaps.append(f"{need}: the server does not list resource type {scope}")
            continue
        elif code in _FLAGS:
            ok = resources[scope].get(_FLAGS[code]) not in (False, "not-supported")
        else:
            ok = code in {i.get("code") for i in resources[scope].get("interaction", [])}
        if not ok:
            gaps.append(f"{need}: the server does not declare it")
    return gaps


def check_server(settings: FhirSettings) -> list[str]:
    """Read the server's CapabilityStatement and return the gaps for ``settings.model`` (ConfigError when the
    statement cannot be read)."""
    client = FhirClient(settings)
    try:
        capability = client.request("GET", "metadata")
    except EngineError as exc:
        raise ConfigError(f"cannot read the FHIR server's CapabilityStatement: {exc}") from exc
    finally:
        client.close()
    if capability.get("resourceType") != "CapabilityStatement":
        raise ConfigError("the FHIR server's /metadata is not a CapabilityStatement")
    if not str(capability.get("fhirVersion", "")).startswith("5."):
        return [f"fhirVersion {capability.get('fhirVersion')!r}: the engine publishes FHIR R5 (5.0.x)"]
    return missing_interactions(capability, get_model(settings.model).needs)
