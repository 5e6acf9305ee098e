"""FHIR ``transaction`` Bundle building blocks (FHIR R5 http.html#transaction, bundle.html#transaction).

Shared by the harmonized (:mod:`pipelines.output.harmonized`) and IMR (:mod:`pipelines.output.imr`)
models. Everything is pure: entries are dicts, match URLs are built from business identifiers.

* :func:`match_url` ``Type?identifier=<system>%7C<value>``: the search a conditional create
  (``ifNoneExist``), conditional update (``PUT``), conditional patch or conditional reference uses. System
  and value are percent-encoded (RFC 3986, ``|`` as ``%7C``, eu-imaging.md §1.7), so identifiers with
  ``&``, ``#``, ``+`` or spaces stay one parameter.
* :func:`json_patch` a JSON Patch (RFC 6902) as the ``Binary`` resource a transaction entry carries
  (``contentType application/json-patch+json``; FHIR http.html#patch).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

__all__ = [
    "conditional_create",
    "conditional_patch",
    "conditional_update",
    "identifier_query",
    "json_patch",
    "match_url",
    "put_by_id",
    "transaction",
]


def identifier_query(ident: dict[str, Any]) -> str:
    """``identifier=<system>%7C<value>`` for an Identifier dict (system and value required)."""
    return f"identifier={quote(str(ident['system']), safe=':/.-_~')}%7C{quote(str(ident['value']), safe=':/.-_~')}"


def match_url(resource_type: str, ident: dict[str, Any]) -> str:
    """``Patient?identifier=urn%3A...``: a conditional URL (search by business identifier)."""
    return f"{resource_type}?{identifier_query(ident)}"


def _without_id(resource: dict[str, Any]) -> dict[str, Any]:
    """Conditional interactions carry no id: the server decides which resource (FHIR http.html#cond-update:
    an id that differs from the matched resource's is an error)."""
    return {k: v for k, v in resource.items() if k != "id"}


def conditional_create(full_url: str, resource: dict[str, Any], ident: dict[str, Any]) -> dict[str, Any]:
    """``POST Type`` with ``ifNoneExist``: create if no resource has the identifier, else reuse it."""
    return {
        "fullUrl": full_url,
        "resource": _without_id(resource),
        "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": identifier_query(ident)},
    }


def conditional_update(full_url: str, resource: dict[str, Any], ident: dict[str, Any]) -> dict[str, Any]:
    """``PUT Type?identifier=...``: create, or replace the one resource with the identifier (new version)."""
    return {
        "fullUrl": full_url,
        "resource": _without_id(resource),
        "request": {"method": "PUT", "url": match_url(resource["resourceType"], ident)},
    }


def put_by_id(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    """``PUT Type/<deterministic id>``: client-assigned id (uuid5 over business identifiers)."""
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }


def json_patch(operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 operations as a transaction-entry Binary (serialised compactly, key order kept)."""
    raw = json.dumps(operations, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(raw).decode(),
    }


def conditional_patch(resource_type: str, ident: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """``PATCH Type?identifier=...`` with a JSON Patch: changes only the named elements (404 when no resource
    has the identifier: nothing is invented)."""
    return {"resource": json_patch(operations), "request": {"method": "PATCH", "url": match_url(resource_type, ident)}}


def transaction(
    bundle_id: str, entries: list[dict[str, Any]], timestamp: str | None, *, batch: bool = False, **extra: Any
) -> dict[str, Any]:
    """The ``transaction`` Bundle (or ``batch``: entries succeed or fail one by one); ids and order
    deterministic."""
    out: dict[str, Any] = {"resourceType": "Bundle", "id": bundle_id}
    out.update(extra)
    out["identifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bundle_id}"}
    out["type"] = "batch" if batch else "transaction"
    if timestamp:
        out["timestamp"] = timestamp
    out["entry"] = entries
    return out
