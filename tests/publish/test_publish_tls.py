"""TLS settings of the FHIR client against a real HTTPS server on loopback (``ssl`` + ``http.server``): the CA file
is used for verification, an unknown CA is refused (transient: a certificate problem is the deployment's, never
the report's), and a client certificate is presented when the server demands one (mutual TLS)."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.errors import TransientError
from engine.publishers.client import FhirClient
from engine.publishers.settings import FhirSettings


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None = None,
          issuer_key: ec.EllipticCurvePrivateKey | None = None, ca: bool = False,
          usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, ca=True)
    files: dict[str, Path] = {}
    for name, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"{name}.test", key, ca.subject, ca_key, usage=usage)
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}.key").write_bytes(_key_pem(key))
        files[name], files[f"{name}_key"] = folder / f"{name}.pem", folder / f"{name}.key"
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    other = ec.generate_private_key(ec.SECP256R1())
    (folder / "other-ca.pem").write_bytes(_cert("other CA", other, ca=True).public_bytes(serialization.Encoding.PEM))
    files["ca"], files["other_ca"] = folder / "ca.pem", folder / "other-ca.pem"
    return files


class _Metadata(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        body = json.dumps({"resourceType": "CapabilityStatement", "client_cert": bool(peer)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def _serve(pki: dict[str, Path], require_client: bool) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"], pki["server_key"])
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki["ca"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def https_url(pki: dict[str, Path]) -> Iterator[str]:
    yield from _serve(pki, require_client=False)


@pytest.fixture
def mtls_url(pki: dict[str, Path]) -> Iterator[str]:
    yield from _serve(pki, require_client=True)


def _get(url: str, **tls: object) -> dict[str, object]:
    settings = FhirSettings.from_mapping({"tls": tls}, {"FHIR_BASE_URL": url})
    client = FhirClient(settings)
    try:
        return client.request("GET", "metadata")
    finally:
        client.close()


def test_ca_file_verifies_the_server(https_url: str, pki: dict[str, Path]) -> None:
    assert _get(https_url, ca_file=str(pki["ca"]))["resourceType"] == "CapabilityStatement"
    with pytest.raises(TransientError, match="ConnectError"):
        _get(https_url, ca_file=str(pki["other_ca"]))  # a server we cannot verify is never trusted
    with pytest.raises(TransientError, match="ConnectError"):
        _get(https_url)  # the system CAs do not know the test CA
    assert _get(https_url, verify=False)["resourceType"] == "CapabilityStatement"  # explicit opt-out only


def test_client_certificate_for_mutual_tls(mtls_url: str, pki: dict[str, Path]) -> None:
    answer = _get(mtls_url, ca_file=str(pki["ca"]), client_cert=str(pki["client"]), client_key=str(pki["client_key"]))
    assert answer["client_cert"] is True
    with pytest.raises(TransientError):
        _get(mtls_url, ca_file=str(pki["ca"]))  # no client certificate: the server refuses the handshake
