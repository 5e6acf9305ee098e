"""OAuth2 for the FHIR publisher, on Authlib's httpx integration (token fetch, expiry, refresh are Authlib's).

* ``client_credentials`` (RFC 6749 §4.4): ``client_secret_post`` with ``FHIR_CLIENT_ID`` / ``FHIR_CLIENT_SECRET``.
* ``smart_backend``: SMART App Launch 2 "Backend Services": ``client_credentials`` grant authenticated with a
  signed JWT client assertion (RFC 7523, ``private_key_jwt``), ``RS384`` or ``ES384``, header ``kid`` (and
  ``typ: JWT``), claims ``iss = sub = client_id``, ``aud`` = token URL, a fresh ``jti`` and ``exp`` 5 minutes
  ahead (SMART's maximum).

A token is fetched on the first request and again shortly before it expires (Authlib's ``ensure_active_token``
with ``grant_type=client_credentials``; leeway 60 s). A refused token request (HTTP 4xx from the authorization
server, ``invalid_client`` ...) is a configuration problem that recurs: the publisher raises it as permanent for
the start-up check and transient at run time (the secret may be rotated without a restart of the server).
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.httpx_client import OAuth2Client
from authlib.jose import JsonWebKey
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign

from engine.publishers.settings import AuthSettings

__all__ = ["SMART_ASSERTION_LIFETIME", "oauth_client"]

SMART_ASSERTION_LIFETIME = 300  # seconds: SMART Backend Services caps exp at 5 minutes


class _SmartAssertion(PrivateKeyJWT):  # type: ignore[misc]
    """``private_key_jwt`` with SMART's 5-minute assertion lifetime and the key's algorithm."""

    name = "private_key_jwt"

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            header=dict(self.headers or {}),
            alg=self.alg,
            expires_in=SMART_ASSERTION_LIFETIME,
        )


def oauth_client(auth: AuthSettings, **httpx_kwargs: Any) -> OAuth2Client:
    """An ``httpx.Client`` subclass that adds ``Authorization: Bearer`` to every request and keeps it fresh."""
    common: dict[str, Any] = {
        "client_id": auth.client_id,
        "scope": auth.scope,
        "token_endpoint": auth.token_url,
        "grant_type": "client_credentials",
        **httpx_kwargs,
    }
    if auth.type == "client_credentials":
        client = OAuth2Client(client_secret=auth.client_secret, token_endpoint_auth_method="client_secret_post",
                              **common)
    else:
        key = JsonWebKey.import_key(auth.private_key)
        headers = {"typ": "JWT", **({"kid": auth.key_id} if auth.key_id else {})}
        method = _SmartAssertion(auth.token_url, headers=headers, alg=auth.algorithm)
        client = OAuth2Client(client_secret=key, token_endpoint_auth_method=method, **common)
    return client


def fetch_token(client: OAuth2Client) -> None:
    """Fetch the first token (later ones are fetched by Authlib when the current one is about to expire)."""
    client.fetch_token(grant_type="client_credentials")
