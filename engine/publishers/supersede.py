"""Version chains of DocumentReferenceImagingReport on the server (eu-imaging.md §1.4, §2.6; MHD ``replaces``).

Before a transaction that carries a report version's DocumentReference is sent, the server is asked for every
DocumentReference with the same report identifier (``use=usual``, shared by all versions; see
:mod:`pipelines.output.docref`). The versions are ordered by ``date`` (the document's timestamp), then by
``docStatus`` (preliminary < final < amended/corrected) and id; then

* the newest is ``current``, every other one ``superseded`` (``entered-in-error`` is left alone);
* the new DocumentReference gets ``relatesTo`` ``replaces`` -> the version just before it;
* every earlier version is added to the same transaction as a ``PUT`` of the server's copy with only ``status``
  set (all in one transaction: the chain never shows two current versions; an unchanged copy is an identical
  update, a no-op). The whole chain travels along so that every ``relatesTo`` and ``subject`` reference resolves
  inside the transaction (``urn:uuid:`` fullUrls; the official validator refuses references to resources outside
  the Bundle); a report has a handful of versions, so this stays small.

A resend finds the same set and computes the same result, so the update is identical (a no-op on the server). A
version that arrives late (older than what the server holds) is *stale*: its DocumentReference is stored
``superseded`` and nothing else of the transaction is sent (the document Bundle is), so the newer Composition,
DiagnosticReport and copies stay (:func:`documents_only`).
Versions of one report are sent in order by the sink (grouped by report id), never concurrently.

The ``harmonized`` model has no DocumentReference: its report versions are versions of one DiagnosticReport found
by identifier (``PUT DiagnosticReport?identifier=...``). :func:`harmonized_version` asks the server for that
DiagnosticReport and compares ``(issued, status rank)``:

* ``"stale"``: the server's is newer (a P resent after the F, a resend of the F after an OBX-11 ``U`` or a cancel
  patched the status): nothing of the version is sent; the shared resources it would create already exist (the
  newer version created them by the same identifiers), and its DiagnosticReport, Composition, findings and
  Provenances must not overwrite the newer ones;
* ``"resend"``: the server holds this very version (it was applied before, atomically): it is sent again (identical
  updates are no-ops) but a Patient replacement (``PUT Patient?identifier=``, the complete-demographics rule of
  :mod:`pipelines.output.harmonized`) becomes create-if-absent (:func:`keep_patient`), so that replaying an old
  message never undoes what a later message of another source (the SR of the same patient) wrote;
* ``"new"``: sent as shaped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote

__all__ = ["apply_supersede", "documents_only", "harmonized_version", "keep_patient"]

_RANK = {"registered": 0, "partial": 1, "preliminary": 2, "final": 3, "appended": 4, "amended": 5, "corrected": 6,
         "cancelled": 7, "entered-in-error": 8}


class _Requester(Protocol):
    def request(self, method: str, url: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> dict[str, Any]: ...


def _when(doc: dict[str, Any], element: str = "date") -> float:
    try:
        return datetime.fromisoformat(str(doc.get(element, "")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _order(doc: dict[str, Any]) -> tuple[float, int, str]:
    return _when(doc), _RANK.get(str(doc.get("docStatus")), 0), str(doc.get("id"))


def _usual(doc: dict[str, Any]) -> dict[str, Any] | None:
    return next((i for i in doc.get("identifier", []) if i.get("use") == "usual" and i.get("system")), None)


def _search_all(client: _Requester, ident: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = client.request("GET", "DocumentReference", params={
        "identifier": f"{ident['system']}|{ident['value']}", "_count": "100"})
    while True:
        found += [e["resource"] for e in page.get("entry", []) if e.get("resource", {}).get("resourceType")
                  == "DocumentReference"]
        nxt = next((link["url"] for link in page.get("link", []) if link.get("relation") == "next"), None)
        if not nxt:
            return found
        page = client.request("GET", nxt)


def _as_sent(doc: dict[str, Any], status: str) -> dict[str, Any]:
    """The server's copy with ``status`` set, server-managed ``meta`` dropped and R5 JSON restored (servers may
    render ``integer64`` ``attachment.size`` as a number; R5 JSON requires a string)."""
    updated = {k: v for k, v in doc.items() if k != "meta"}
    if "profile" in doc.get("meta", {}):
        updated = {"resourceType": doc["resourceType"], "id": doc["id"], "meta": {"profile": doc["meta"]["profile"]},
                   **{k: v for k, v in updated.items() if k not in ("resourceType", "id")}}
    updated["status"] = status
    content = []
    for item in updated.get("content", []):
        attachment = item.get("attachment", {})
        if isinstance(attachment.get("size"), int):
            item = {**item, "attachment": {**attachment, "size": str(attachment["size"])}}
        content.append(item)
    if content:
        updated["content"] = content
    return updated


def apply_supersede(client: _Requester, transaction: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Return ``(transaction with version-chain updates, stale)`` (the input is not modified); ``stale`` is True
    when the server already holds a newer version of the report (this one arrived late or is a resend of an
    old version): see :func:`documents_only`."""
    entries = transaction.get("entry", [])
    positions = [n for n, e in enumerate(entries) if e.get("resource", {}).get("resourceType") == "DocumentReference"
                 and _usual(e["resource"]) is not None]
    stale = False
    if not positions:
        return transaction, stale
    out = dict(transaction)
    out_entries = list(entries)
    for n in positions:
        new = dict(out_entries[n]["resource"])
        ident = _usual(new)
        assert ident is not None
        existing = [d for d in _search_all(client, ident) if d.get("id") != new["id"]]
        if not existing:
            continue
        chain = sorted([*existing, new], key=_order)
        latest = chain[-1]
        position = next(i for i, d in enumerate(chain) if d is new)
        if position > 0:
            new["relatesTo"] = [{"code": {"coding": [{
                "system": "http://hl7.org/fhir/document-relationship-type", "code": "replaces"}]},
                "target": {"reference": f"urn:uuid:{chain[position - 1]['id']}"}}]
        if latest is not new:
            new["status"] = "superseded"
            stale = True
        out_entries[n] = {**out_entries[n], "resource": new}
        for doc in existing:
            want = "current" if doc is latest else "superseded"
            if doc.get("status") == "entered-in-error":
                want = "entered-in-error"
            out_entries.append({
                "fullUrl": f"urn:uuid:{doc['id']}",
                "resource": _as_sent(doc, want),
                "request": {"method": "PUT", "url": f"DocumentReference/{quote(doc['id'])}"},
                "_server_copy": True,
            })
    # references of the server copies ("Patient/x", "DocumentReference/y") to resources this transaction also
    # writes point at those entries (the server turns them back into the same "Type/id": an identical update)
    urls = {e["request"]["url"]: e["fullUrl"] for e in out_entries
            if e.get("request", {}).get("method") == "PUT" and str(e.get("fullUrl", "")).startswith("urn:uuid:")}
    out["entry"] = [
        {k: v for k, v in e.items() if k != "_server_copy"} | {"resource": _rewrite(e["resource"], urls)}
        if e.get("_server_copy") else e
        for e in out_entries
    ]
    return out, stale


def documents_only(transaction: dict[str, Any]) -> dict[str, Any]:
    """For a stale version: keep only the DocumentReference entries (its own, stored ``superseded``, and the chain),
    so that an old version arriving late never overwrites the newer Composition, DiagnosticReport and copies
    (``rest``: one logical resource per report). References to dropped entries become ``Type/id`` (the newer
    version wrote those resources)."""
    kept, urls = [], {}
    for e in transaction.get("entry", []):
        if e.get("resource", {}).get("resourceType") == "DocumentReference":
            kept.append(e)
        elif e.get("fullUrl") and e.get("request", {}).get("method") == "PUT":
            urls[e["fullUrl"]] = e["request"]["url"]
    return {**transaction, "entry": [{**e, "resource": _rewrite(e["resource"], urls)} for e in kept]}


def _rewrite(node: Any, urls: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (urls.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, urls))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(item, urls) for item in node]
    return node


_REPORT_UPDATE = "DiagnosticReport?identifier="


def harmonized_version(client: _Requester, transaction: dict[str, Any]) -> str:
    """``"new"``, ``"resend"`` or ``"stale"`` for a transaction that conditionally updates a DiagnosticReport
    (``PUT DiagnosticReport?identifier=``, the harmonized model; module docstring); ``"new"`` for any other unit.
    One search."""
    entry = next((e for e in transaction.get("entry", []) if e.get("request", {}).get("method") == "PUT"
                  and str(e["request"].get("url", "")).startswith(_REPORT_UPDATE)), None)
    if entry is None:
        return "new"
    ours = entry.get("resource", {})
    page = client.request("GET", "DiagnosticReport", params={
        "identifier": unquote(entry["request"]["url"][len(_REPORT_UPDATE):]), "_count": "10"})
    held = [(_when(e["resource"], "issued"), _RANK.get(str(e["resource"].get("status")), 0))
            for e in page.get("entry", []) if e.get("resource", {}).get("resourceType") == "DiagnosticReport"]
    mine = (_when(ours, "issued"), _RANK.get(str(ours.get("status")), 0))
    if any(h > mine for h in held):
        return "stale"
    return "resend" if mine in held else "new"


def keep_patient(transaction: dict[str, Any]) -> dict[str, Any]:
    """The transaction with every ``PUT Patient?identifier=...`` turned into ``POST Patient`` with
    ``ifNoneExist`` (create if absent, never replace); same fullUrl, so references still resolve."""
    entries = []
    for e in transaction.get("entry", []):
        url = str(e.get("request", {}).get("url", ""))
        if e.get("request", {}).get("method") == "PUT" and url.startswith("Patient?"):
            e = {**e, "request": {"method": "POST", "url": "Patient", "ifNoneExist": url.split("?", 1)[1]}}
        entries.append(e)
    return {**transaction, "entry": entries}
