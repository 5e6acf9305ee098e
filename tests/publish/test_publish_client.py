"""FhirClient classification and OAuth2 at the HTTP seam (httpx.MockTransport), plus a real refused connection.

The real server tests (test_publish_hapi.py, test_publish_outage.py) cover 2xx, 400 with an OperationOutcome,
refused connections and back-pressure against HAPI; statuses HAPI does not produce on demand (429 with
Retry-After, 503, 500, 422, 412, redirects, token endpoints) are driven here.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from authlib.jose import JsonWebKey, jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.errors import BackPressure, ConfigError, PermanentError, TransientError
from engine.publishers.client import FhirClient, FhirRejected, outcome_reason
from engine.publishers.fhir import _check_batch
from engine.publishers.settings import FhirSettings

BASE = "https://fhir.test/fhir"
TOKEN_URL = "https://auth.test/token"
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                          "diagnostics": 'Invalid value "DOE^JOHN" at Patient.name'}]}


def _client(handler: Callable[[httpx.Request], httpx.Response], env: dict[str, str] | None = None,
            **raw: Any) -> FhirClient:
    settings = FhirSettings.from_mapping(raw, {"FHIR_BASE_URL": BASE, **(env or {})})
    return FhirClient(settings, transport=httpx.MockTransport(handler))


def _fixed(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    return lambda request: httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize("status", [400, 404, 409, 410, 412, 422])
def test_permanent_statuses_keep_the_operation_outcome(status: int) -> None:
    with pytest.raises(FhirRejected) as info:
        _client(_fixed(status, OUTCOME)).request("POST", "", {"resourceType": "Bundle"})
    assert info.value.status == status and info.value.outcome == OUTCOME
    assert isinstance(info.value, PermanentError)
    reason = str(info.value)
    assert reason == f"FHIR POST /: HTTP {status} processing: Invalid value '…' at Patient.name"
    assert "DOE" not in reason  # quoted values never reach the one-line reason


@pytest.mark.parametrize("status", [500, 502, 504, 408])
def test_server_errors_and_timeouts_are_transient(status: int) -> None:
    with pytest.raises(TransientError) as info:
        _client(_fixed(status, OUTCOME)).request("GET", "metadata")
    assert not isinstance(info.value, PermanentError | BackPressure)


def test_retry_after_is_respected_before_the_next_request() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429, headers={"Retry-After": "2"}) if len(calls) == 1 else httpx.Response(200, json={})

    client = _client(handler)
    with pytest.raises(BackPressure) as info:
        client.request("POST", "", {})
    assert info.value.retry_after == 2.0
    with pytest.raises(BackPressure) as again:  # the server asked us to wait: not even sent
        client.request("POST", "", {})
    assert len(calls) == 1 and 0 < again.value.retry_after <= 2.0
    client._not_before = time.monotonic()  # the wait is over
    assert client.request("POST", "", {}) == {} and len(calls) == 2


def test_retry_after_http_date_is_capped_and_503_without_it_is_transient() -> None:
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 7200))
    with pytest.raises(BackPressure) as info:
        _client(_fixed(503, None, {"Retry-After": later}), max_retry_after=60).request("GET", "metadata")
    assert info.value.retry_after == 60.0
    with pytest.raises(TransientError) as plain:
        _client(_fixed(503)).request("GET", "metadata")
    assert not isinstance(plain.value, BackPressure)


def test_timeouts_and_refused_connections_are_transient() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(TransientError, match="timeout"):
        _client(timeout).request("GET", "metadata")
    with socket.socket() as sock:  # a real loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = FhirClient(FhirSettings.from_mapping({}, {"FHIR_BASE_URL": f"http://127.0.0.1:{port}/fhir"}))
    with pytest.raises(TransientError, match="ConnectError"):
        client.request("GET", "metadata")


def test_redirects_are_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fhir/metadata":
            return httpx.Response(307, headers={"Location": f"{BASE}/v2/metadata"})
        return httpx.Response(200, json={"resourceType": "CapabilityStatement"})

    assert _client(handler).request("GET", "metadata")["resourceType"] == "CapabilityStatement"


def test_batch_entries_are_classified_like_responses() -> None:
    ok = {"response": {"status": "200 OK"}}
    _check_batch({"entry": [ok, {"response": {"status": "201 Created"}}]})
    with pytest.raises(FhirRejected):
        _check_batch({"entry": [ok, {"response": {"status": "422 Unprocessable Entity", "outcome": OUTCOME}}]})
    with pytest.raises(TransientError):
        _check_batch({"entry": [{"response": {"status": "409 Conflict"}}, {"response": {"status": "503"}}]})


def test_outcome_reason_without_an_outcome() -> None:
    assert outcome_reason(None) == "no OperationOutcome"
    assert outcome_reason({"resourceType": "OperationOutcome", "issue": [{"code": "conflict"}]}) == "conflict"


def _token_server(tokens: list[dict[str, Any]], seen: list[dict[str, list[str]]]) -> Callable[..., httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            seen.append(parse_qs(request.content.decode()))
            return httpx.Response(200, json=tokens[len(seen) - 1])
        auth = request.headers.get("Authorization", "")
        return httpx.Response(200, json={"auth": auth})
    return handler


def test_client_credentials_token_is_fetched_sent_and_refreshed() -> None:
    seen: list[dict[str, list[str]]] = []
    tokens = [{"access_token": f"t{n}", "token_type": "Bearer", "expires_in": 3600} for n in (1, 2)]
    client = _client(_token_server(tokens, seen), {"FHIR_CLIENT_SECRET": "s3cret"},
                     auth={"type": "client_credentials", "token_url": TOKEN_URL, "client_id": "engine",
                           "scope": "system/*.cruds"})
    assert client.request("GET", "metadata") == {"auth": "Bearer t1"}
    assert client.request("GET", "metadata") == {"auth": "Bearer t1"}  # still valid: no new token
    assert seen[0]["grant_type"] == ["client_credentials"] and seen[0]["client_secret"] == ["s3cret"]
    client.http.token["expires_at"] = int(time.time()) - 1  # type: ignore[attr-defined]
    assert client.request("GET", "metadata") == {"auth": "Bearer t2"} and len(seen) == 2


def test_refused_token_request_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client"})

    client = _client(handler, {"FHIR_CLIENT_SECRET": "wrong"},
                     auth={"type": "client_credentials", "token_url": TOKEN_URL, "client_id": "engine"})
    with pytest.raises(TransientError, match="invalid_client"):
        client.request("GET", "metadata")


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_smart_backend_services_signs_a_client_assertion(algorithm: str) -> None:
    key = rsa.generate_private_key(65537, 2048) if algorithm == "RS384" else ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    seen: list[dict[str, list[str]]] = []
    client = _client(_token_server([{"access_token": "smart", "token_type": "Bearer", "expires_in": 300}], seen),
                     {"FHIR_PRIVATE_KEY": pem},
                     auth={"type": "smart_backend", "token_url": TOKEN_URL, "client_id": "engine-app",
                           "scope": "system/DocumentReference.c", "algorithm": algorithm, "key_id": "k1"})
    assert client.request("GET", "metadata") == {"auth": "Bearer smart"}
    form = seen[0]
    assert form["grant_type"] == ["client_credentials"] and form["scope"] == ["system/DocumentReference.c"]
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    assertion = form["client_assertion"][0]
    public = JsonWebKey.import_key(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    claims = jwt.decode(assertion, public)
    header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
    assert header["alg"] == algorithm and header["kid"] == "k1" and header["typ"] == "JWT"
    assert claims["iss"] == claims["sub"] == "engine-app" and claims["aud"] == TOKEN_URL and claims["jti"]
    assert 0 < claims["exp"] - claims["iat"] <= 300


@pytest.mark.parametrize(("raw", "env", "message"), [
    ({}, {}, "no server: set the environment variable FHIR_BASE_URL"),
    ({}, {"FHIR_BASE_URL": "http://fhir.example.org/fhir"}, "plain http to fhir.example.org is refused"),
    ({"model": "nope"}, {"FHIR_BASE_URL": BASE}, "unknown model 'nope'"),
    ({"auth": {"type": "client_credentials", "token_url": TOKEN_URL, "client_id": "x"}}, {"FHIR_BASE_URL": BASE},
     "needs the environment variable FHIR_CLIENT_SECRET"),
    ({"auth": {"type": "smart_backend", "token_url": TOKEN_URL, "client_id": "x"}}, {"FHIR_BASE_URL": BASE},
     "needs a PEM private key"),
    ({"auth": {"type": "smart_backend", "token_url": TOKEN_URL, "client_id": "x", "algorithm": "HS256"}},
     {"FHIR_BASE_URL": BASE}, "expected RS384 or ES384"),
    ({"tls": {"ca_file": "/no/such/ca.pem"}}, {"FHIR_BASE_URL": BASE}, "no such file"),
    ({"concurrency": 0}, {"FHIR_BASE_URL": BASE}, "concurrency"),
    ({"bogus": 1}, {"FHIR_BASE_URL": BASE}, "unknown key(s) bogus"),
])
def test_settings_errors(raw: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        FhirSettings.from_mapping(raw, env)
    assert message in str(info.value)


def test_base_url_comes_from_the_environment() -> None:
    settings = FhirSettings.from_mapping({"base_url": "https://other/fhir", "model": "rest"},
                                         {"FHIR_BASE_URL": "https://hub.example/fhir/"})
    assert settings.base_url == "https://hub.example/fhir" and settings.model == "rest"
    assert "s3cret" not in repr(FhirSettings.from_mapping(
        {"auth": {"type": "client_credentials", "token_url": TOKEN_URL, "client_id": "x"}},
        {"FHIR_BASE_URL": BASE, "FHIR_CLIENT_SECRET": "s3cret"}))


def test_engine_validate_without_a_reachable_server_exits_2(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from engine.cli import main as engine_main
    from tests.runtime.runtime_harness import REPO

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FHIR_BASE_URL", f"http://127.0.0.1:{port}/fhir")
    config = yaml.safe_load((REPO / "config" / "document-fhir.yaml").read_text())
    config["store"]["path"] = str(tmp_path / "store")
    path = tmp_path / "document-fhir.yaml"
    path.write_text(yaml.safe_dump(config))
    assert engine_main(["validate", "--config", str(path)]) == 2
    assert "cannot read the FHIR server's CapabilityStatement" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("request_", "transient"),
    [
        ({"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:x|1"}, True),
        ({"method": "PUT", "url": "DiagnosticReport?identifier=urn:x|r1"}, True),
        ({"method": "PUT", "url": "DiagnosticReport/abc"}, False),
    ],
)
def test_409_on_a_conditional_transaction_is_a_write_race(request_: dict[str, str], transient: bool) -> None:
    """Concurrent harmonized transactions that create the same shared resource: the loser gets 409 (HAPI-0550,
    seen with bench_publish.py --model harmonized --concurrency 4); resent, its conditional entries match, so it
    is retried (transient). A 409 on a transaction without conditional entries stays permanent."""
    from engine.publishers.fhir import FhirSink

    settings = FhirSettings.from_mapping({"supersede": False}, {"FHIR_BASE_URL": BASE})
    sink = FhirSink(settings, client=_client(_fixed(409, OUTCOME)))
    unit = {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Organization"}, "request": request_}]}
    with pytest.raises(TransientError if transient else PermanentError) as info:
        sink.send(unit)
    assert isinstance(info.value, PermanentError) != transient
    sink.close()
