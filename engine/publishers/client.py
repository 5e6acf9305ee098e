"""A FHIR REST client on httpx: pooled connections, redirects, TLS, OAuth2, and *one* classification of failures.

:meth:`FhirClient.request` returns the parsed JSON body of a 2xx answer or raises

* :class:`engine.errors.BackPressure` for 429 and 503 (``retry_after`` from the ``Retry-After`` header, seconds or
  an HTTP date, capped at ``max_retry_after``; without the header the worker's back-off applies); until that time
  has passed the client refuses to send to the server at all (the server asked us to wait);
* :class:`engine.errors.TransientError` for other 5xx, 408, 401/403 after a token refresh, timeouts, connection and
  protocol errors, and a refused token request (a rotated secret must not dead-letter reports);
* :class:`FhirRejected` (a :class:`engine.errors.PermanentError`) for 400, 404, 405, 409, 410, 412, 422 and any
  other 4xx: ``reason`` is one PHI-free line (status, the OperationOutcome's first issue code and its diagnostics,
  trimmed, with quoted values replaced by ``'…'``); ``outcome`` keeps the whole OperationOutcome for the dead
  letter.

Concurrency: the client is thread-safe (httpx pools up to ``concurrency`` connections per server, FHIR R5 http.html).
"""

from __future__ import annotations

import email.utils
import json
import re
import ssl
import threading
import time
from typing import Any

import httpx

from engine.errors import BackPressure, PermanentError, TransientError
from engine.publishers.settings import FhirSettings

__all__ = ["FHIR_JSON", "FhirClient", "FhirRejected", "outcome_reason"]

FHIR_JSON = "application/fhir+json"
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'|\[[^\]]{12,}\]")
_PERMANENT_STATUSES = {400, 404, 405, 406, 409, 410, 412, 413, 415, 422}
MAX_REASON = 240


class FhirRejected(PermanentError):
    """The server refused the request for good; ``outcome`` is its OperationOutcome (or None)."""

    def __init__(self, reason: str, status: int, outcome: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.outcome = outcome

    @property
    def details(self) -> dict[str, Any]:
        """What the dead letter keeps besides the reason."""
        return {"http_status": self.status, "operation_outcome": self.outcome}


def _trim(text: str) -> str:
    line = " ".join(_QUOTED.sub("'…'", text).split())
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"


def outcome_reason(outcome: dict[str, Any] | None) -> str:
    """``<issue code>: <diagnostics>`` of the first error issue, trimmed and with quoted values masked."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return "no OperationOutcome"
    issues = [i for i in outcome.get("issue", []) if isinstance(i, dict)]
    issue = next((i for i in issues if i.get("severity") in ("error", "fatal")), issues[0] if issues else {})
    text = str(issue.get("diagnostics") or issue.get("details", {}).get("text") or "")
    return _trim(f"{issue.get('code', 'unknown')}: {text}" if text else str(issue.get("code", "unknown")))


def _retry_after(header: str | None, cap: float) -> float | None:
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return min(float(header), cap)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), cap)


def tls_context(settings: FhirSettings) -> ssl.SSLContext:
    """TLS 1.2 or higher (SMART Backend Services); the CA file replaces the system CAs when given (a private PKI is
    pinned); the client certificate (and key) for mutual TLS; ``verify: false`` only when configured."""
    tls = settings.tls
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.client_cert is not None:
        context.load_cert_chain(str(tls.client_cert), str(tls.client_key) if tls.client_key else None)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class FhirClient:
    def __init__(self, settings: FhirSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.base = settings.base_url + "/"
        kwargs: dict[str, Any] = {
            "base_url": self.base,
            "timeout": httpx.Timeout(settings.timeout),
            "limits": httpx.Limits(max_connections=settings.concurrency,
                                   max_keepalive_connections=settings.concurrency),
            "follow_redirects": True,
            "verify": tls_context(settings),
            "headers": {"Accept": FHIR_JSON, "User-Agent": "imaging-report-engine"},
        }
        if transport is not None:
            kwargs["transport"] = transport
        self._oauth = settings.auth is not None
        if settings.auth is not None:
            from engine.publishers.auth import oauth_client

            self.http: httpx.Client = oauth_client(settings.auth, **kwargs)
        else:
            self.http = httpx.Client(**kwargs)
        self._token_lock = threading.Lock()
        self._not_before = 0.0  # monotonic time before which the server asked us not to send (Retry-After)

    # -- auth -----------------------------------------------------------------------------------------

    def _ensure_token(self, force: bool = False) -> None:
        if not self._oauth:
            return
        from authlib.integrations.base_client import OAuthError

        client: Any = self.http
        with self._token_lock:
            token = client.token
            if force or not token or token.is_expired(leeway=60):
                try:
                    client.fetch_token(grant_type="client_credentials")
                except OAuthError as exc:
                    raise TransientError(f"FHIR token request refused: {_trim(str(exc.error))}") from exc
                except httpx.HTTPError as exc:
                    raise TransientError(f"FHIR token request failed: {type(exc).__name__}") from exc

    # -- requests -------------------------------------------------------------------------------------

    def request(self, method: str, url: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> dict[str, Any]:
        """Send one request (``url`` relative to the base URL); parsed JSON of a 2xx answer (``{}`` if empty)."""
        wait = self._not_before - time.monotonic()
        if wait > 0:
            raise BackPressure(f"FHIR server asked to wait (Retry-After), {wait:.1f} s left", retry_after=wait)
        headers = {"Content-Type": FHIR_JSON} if body is not None else {}
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() if body is not None else None
        what = f"FHIR {method} {url.split('?')[0] or '/'}"
        for attempt in (1, 2):
            self._ensure_token(force=attempt == 2)
            try:
                response = self.http.request(method, url, content=content, headers=headers, params=params)
            except httpx.TimeoutException as exc:
                raise TransientError(f"{what}: timeout ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"{what}: {type(exc).__name__}") from exc
            if response.status_code in (401, 403) and self._oauth and attempt == 1:
                continue  # the token may have been revoked: fetch a new one once
            return self._classify(response, what)
        raise AssertionError("unreachable")

    def _classify(self, response: httpx.Response, what: str) -> dict[str, Any]:
        status = response.status_code
        parsed: Any = None
        if response.content:
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
        if 200 <= status < 300:
            if response.content and not isinstance(parsed, dict):
                raise TransientError(f"{what}: {status} with a body that is not JSON")
            return parsed or {}
        outcome = parsed if isinstance(parsed, dict) and parsed.get("resourceType") == "OperationOutcome" else None
        if status in (429, 503):
            delay = _retry_after(response.headers.get("Retry-After"), self.settings.max_retry_after)
            if delay is not None:
                self._not_before = time.monotonic() + delay
                raise BackPressure(f"{what}: HTTP {status}, Retry-After {delay:.0f} s", retry_after=max(delay, 0.01))
            raise TransientError(f"{what}: HTTP {status}")
        if status >= 500 or status in (401, 403, 407, 408, 425):
            raise TransientError(f"{what}: HTTP {status} ({outcome_reason(outcome)})")
        if status in _PERMANENT_STATUSES or 400 <= status < 500:
            raise FhirRejected(f"{what}: HTTP {status} {outcome_reason(outcome)}", status, outcome)
        raise TransientError(f"{what}: unexpected HTTP {status}")

    def close(self) -> None:
        self.http.close()
