"""The management API on a real store filled by the real worker: auth, roles, search, actions, audit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from engine.console.settings import ConsoleSettings
from engine.errors import ConfigError
from engine.message_index import accession_hash
from engine.settings import parse_settings
from tests.console.conftest import DEAD_ORU, GOOD_ORU, PASSWORDS, Deployment

OPS, VIEWER, DOC = (("ops", PASSWORDS["ops"]), ("viewer", PASSWORDS["viewer"]), ("doc", PASSWORDS["doc"]))


@pytest.fixture
def filled(deployment: Deployment) -> tuple[Deployment, str, str]:
    good, dead = deployment.land(GOOD_ORU, source="mllp"), deployment.land(DEAD_ORU, source="inbox")
    deployment.process()
    return deployment, good, dead


@pytest.fixture
def client(filled: tuple[Deployment, str, str]) -> TestClient:
    return TestClient(filled[0].app())


def test_authentication_is_required(client: TestClient) -> None:
    for path in ("/api/v1/messages", "/api/v1/messages/1", "/api/v1/sources", "/console/", "/console/messages"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic")
    assert client.get("/api/v1/messages", auth=("ops", "wrong")).status_code == 401
    assert client.get("/api/v1/messages", auth=("nobody", PASSWORDS["ops"])).status_code == 401
    assert client.get("/api/v1/messages", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/messages", headers={"Authorization": "Bearer doc-token"}).status_code == 200
    assert client.post("/api/v1/messages/2/reprocess").status_code == 401
    assert client.get("/api/openapi.json").status_code == 200  # the document itself is public


def test_search_by_each_key(filled: tuple[Deployment, str, str], client: TestClient) -> None:
    _, good, dead = filled

    def ids(**params: str) -> list[int]:
        response = client.get("/api/v1/messages", params=params, auth=VIEWER)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["items"]]

    assert ids() == [int(dead), int(good)]
    assert ids(control_id="CTRL-DEAD-1") == [int(dead)]
    assert ids(status="failed") == [int(dead)]
    assert ids(status="published") == [int(good)]
    assert ids(source="mllp") == [int(good)]
    assert ids(message_type="ORU^R01^ORU_R01") == [int(dead), int(good)]
    assert ids(message_type="ORU^R01") == ids(message_type="ORU") == [int(dead), int(good)]
    assert ids(message_type="OR") == [] and ids(message_type="ADT") == []
    assert ids(accession="ACC-GOOD-1") == [int(good)]
    assert ids(accession="ACC-OTHER") == []
    assert ids(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []
    assert ids(since="2000-01-01T00:00:00Z") == [int(dead), int(good)]
    assert ids(since="1998-12-31T23:59:60Z") == ids(since="0000-01-01T00:00:00Z") == [int(dead), int(good)]
    for bad in ("1700000000", "2000-02-30T00:00:00Z", "yesterday"):
        assert client.get("/api/v1/messages", params={"since": bad}, auth=VIEWER).status_code == 422
    page = client.get("/api/v1/messages", params={"limit": 1}, auth=VIEWER).json()
    assert [m["id"] for m in page["items"]] == [int(dead)] and page["next_before_id"] == int(dead)
    older = client.get("/api/v1/messages", params={"limit": 1, "before_id": page["next_before_id"]}, auth=VIEWER)
    assert [m["id"] for m in older.json()["items"]] == [int(good)] and older.json()["next_before_id"] is None
    assert client.get("/api/v1/messages", params={"limit": 0}, auth=VIEWER).status_code == 422
    for bad in ({"status": "['failed']"}, {"source": ""}, {"control_id": "a\nb"}, {"message_type": "ORU R01"}):
        assert client.get("/api/v1/messages", params=bad, auth=VIEWER).status_code == 422, bad
    repeated = client.get("/api/v1/messages?status=failed&status=published", auth=VIEWER)
    assert repeated.status_code == 422 and repeated.json()["detail"][0]["loc"] == ["query", "status"]


def test_detail_history_and_outputs(filled: tuple[Deployment, str, str], client: TestClient) -> None:
    dep, good, dead = filled
    detail = client.get(f"/api/v1/messages/{good}", auth=VIEWER).json()
    assert [e["event"] for e in detail["history"]] == ["received", "mapped", "published"]
    bundle = detail["outputs"][0]
    assert detail["published"] == [{"bundle_id": bundle, "published_to": [f"folder:{dep.outbox / (bundle + '.json')}"]}]
    assert "DOE" not in json.dumps(detail)  # metadata is PHI-free
    assert detail["accession_hashes"] == [accession_hash("ACC-GOOD-1")]
    failed = client.get(f"/api/v1/messages/{dead}", auth=VIEWER).json()
    assert failed["status"] == "failed" and failed["error_class"] == "ParseError"
    assert "truncated" in failed["error_reason"]
    assert client.get("/api/v1/messages/999", auth=VIEWER).status_code == 404


def test_original_and_report_text_need_the_phi_role_and_are_audited(
    filled: tuple[Deployment, str, str], client: TestClient
) -> None:
    dep, good, _dead = filled
    bundle = client.get(f"/api/v1/messages/{good}", auth=VIEWER).json()["outputs"][0]
    for auth in (VIEWER, OPS):
        assert client.get(f"/api/v1/messages/{good}/original", auth=auth).status_code == 403
        assert client.get(f"/api/v1/messages/{good}/outputs/{bundle}", auth=auth).status_code == 403
        assert client.get(f"/console/messages/{good}/original", auth=auth).status_code == 403
    assert not dep.audit.exists() or dep.audit.read_text() == ""
    original = client.get(f"/api/v1/messages/{good}/original", auth=DOC)
    assert original.status_code == 200 and original.content == GOOD_ORU
    report = client.get(f"/api/v1/messages/{good}/outputs/{bundle}", auth=DOC)
    assert report.status_code == 200 and "No acute findings." in report.text
    assert client.get(f"/api/v1/messages/{good}/outputs/..%2Fx", auth=DOC).status_code == 404
    page = client.get(f"/console/messages/{good}/original", auth=DOC)
    assert page.status_code == 200 and "DOE^JOHN" in page.text
    lines = [json.loads(line) for line in dep.audit.read_text().splitlines()]
    assert [(e["actor"], e["action"], e["message_id"]) for e in lines] == [
        ("doc", "view_original", int(good)), ("doc", "view_output", int(good)), ("doc", "view_original", int(good))
    ]
    assert lines[1]["detail"] == {"bundle_id": bundle}
    stored = dep.store.select("SELECT actor, action, message_id FROM audit_log ORDER BY id")
    assert stored == [(e["actor"], e["action"], e["message_id"]) for e in lines]
    assert "DOE" not in dep.audit.read_text()


def test_reprocess_and_discard(filled: tuple[Deployment, str, str], client: TestClient) -> None:
    dep, good, dead = filled
    assert client.post(f"/api/v1/messages/{dead}/reprocess", auth=VIEWER).status_code == 403
    assert client.post(f"/api/v1/messages/{good}/discard", auth=OPS).status_code == 409  # not a dead letter
    cross = client.post(f"/api/v1/messages/{dead}/discard", auth=OPS, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    response = client.post(f"/api/v1/messages/{dead}/reprocess", auth=OPS)
    assert response.status_code == 200 and response.json()["status"] == "received"
    assert response.json()["replays"] == 1
    assert client.post(f"/api/v1/messages/{dead}/reprocess", auth=OPS).status_code == 409  # queued already
    dep.process()  # the real worker converts it again: still a dead letter
    assert dep.store.get(dead).status == "failed"  # type: ignore[union-attr]
    response = client.post(f"/api/v1/messages/{dead}/discard", auth=OPS)
    assert response.status_code == 200 and response.json()["status"] == "discarded"
    assert dep.store.get(dead).payload == DEAD_ORU  # type: ignore[union-attr]  # never deleted
    assert dep.store.requeue(dead_letters=True) == 0  # `engine replay --dead-letters` leaves it alone
    events = [e["event"] for e in client.get(f"/api/v1/messages/{dead}", auth=VIEWER).json()["history"]]
    assert events == ["received", "mapped", "failed", "replayed", "mapped", "failed", "discarded"]
    audit = [json.loads(line) for line in dep.audit.read_text().splitlines()]
    assert [(e["actor"], e["action"], e["detail"]) for e in audit] == [
        ("ops", "reprocess", {"previous_status": "failed"}), ("ops", "discard", {"previous_status": "failed"})
    ]
    assert client.post("/api/v1/messages/999/reprocess", auth=OPS).status_code == 404


def test_sources_dashboard_counters(client: TestClient) -> None:
    sources = {s["source"]: s for s in client.get("/api/v1/sources", auth=VIEWER).json()}
    assert sources["mllp"]["counts"] == {"published": 1} and sources["inbox"]["counts"] == {"failed": 1}
    page = client.get("/console/", auth=VIEWER)
    assert page.status_code == 200 and 'data-source="inbox"' in page.text
    totals = page.text[page.text.index('id="totals"'):]
    assert re.findall(r"<th>(\d+)</th>", totals[: totals.index("</tr>")]) == ["1", "1", "2"]  # failed, published, all


def test_console_pages_find_and_reprocess(filled: tuple[Deployment, str, str], client: TestClient) -> None:
    _, _good, dead = filled
    found = client.get("/console/messages", params={"control_id": "CTRL-DEAD-1"}, auth=OPS)
    assert f'href="/console/messages/{dead}"' in found.text and "status-failed" in found.text
    assert "since: not a date/time" in client.get("/console/messages", params={"since": "bad"}, auth=OPS).text
    page = client.get(f"/console/messages/{dead}", auth=VIEWER)
    assert 'id="reprocess"' not in page.text  # viewers get no buttons
    page = client.get(f"/console/messages/{dead}", auth=OPS)
    assert 'id="reprocess"' in page.text and 'id="discard"' in page.text and "Show original" not in page.text
    done = client.post(f"/console/messages/{dead}/reprocess", auth=OPS, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/console/messages/{dead}?done=reprocess"


# -- settings ------------------------------------------------------------------------------------

BASE = {"sources": {"inbox": {"path": "in"}}, "sinks": {"folder": {"path": "out"}}, "dlq": {"folder": {"path": "d"}}}


def test_console_is_off_by_default_and_refuses_to_run_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_CONSOLE_TOKEN", raising=False)
    assert parse_settings(BASE, environ={}).console is None
    assert parse_settings({**BASE, "console": {"enabled": False}}, environ={}).console is None
    with pytest.raises(ConfigError, match="console: no credentials"):
        parse_settings({**BASE, "console": {}}, environ={})
    with pytest.raises(ConfigError, match="OPS_PW is not set"):
        parse_settings({**BASE, "console": {"users": [{"name": "ops", "password_env": "OPS_PW"}]}}, environ={})
    with pytest.raises(ConfigError, match="password_env and/or token_env"):
        parse_settings({**BASE, "console": {"users": [{"name": "ops", "roles": []}]}}, environ={})
    with pytest.raises(ConfigError, match="unknown role"):
        ConsoleSettings.from_mapping({"token_roles": ["admin"]}, {"ENGINE_CONSOLE_TOKEN": "t"})
    monkeypatch.setenv("ENGINE_CONSOLE_TOKEN", "t0k3n")
    console = parse_settings({**BASE, "console": {}}, environ={}).console
    assert console.host == "127.0.0.1" and console.port == 8081
    assert [(u.name, sorted(u.roles), u.token) for u in console.users] == [("token", ["operator"], "t0k3n")]


def test_console_server_refuses_a_port_in_use(deployment: Deployment, tmp_path: Path) -> None:
    import socket

    from engine.console.server import ConsoleServer

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            ConsoleServer(deployment.app(), "127.0.0.1", busy.getsockname()[1])


def test_a_non_loopback_console_needs_tls_or_an_explicit_insecure(tmp_path: Path) -> None:
    env = {"ENGINE_CONSOLE_TOKEN": "t"}
    with pytest.raises(ConfigError, match="not a loopback address"):
        ConsoleSettings.from_mapping({"host": "0.0.0.0"}, env)
    assert ConsoleSettings.from_mapping({"host": "0.0.0.0", "insecure": True}, env) is not None
    with pytest.raises(ConfigError, match=r"tls\.cert: no such file"):
        ConsoleSettings.from_mapping({"host": "0.0.0.0", "tls": {"cert": "nope.pem", "key": "nope.key"}}, env)


def test_console_over_https(deployment: Deployment, tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess
    import urllib.request

    from engine.console.server import ConsoleServer

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key), "-out",
         str(cert), "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    settings = ConsoleSettings.from_mapping(
        {"host": "127.0.0.1", "port": 0, "tls": {"cert": str(cert), "key": str(key)}}, {"ENGINE_CONSOLE_TOKEN": "tk"}
    )
    assert settings is not None and settings.tls_cert == cert
    with pytest.raises(ConfigError, match="cannot load"):
        ConsoleServer(deployment.app(), "127.0.0.1", 0, (key, key))
    server = ConsoleServer(deployment.app(), "127.0.0.1", 0, (cert, key))
    server.start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(
            f"https://127.0.0.1:{server.port}/api/v1/sources", headers={"Authorization": "Bearer doc-token"}
        )
        # the socket listens before uvicorn serves: the request waits in the backlog, no retry needed
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            assert response.status == 200 and response.read() == b"[]"
    finally:
        server.stop()


def test_a_kafka_deployment_has_no_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_CONSOLE_TOKEN", "t")
    data = {**BASE, "sources": {"kafka": {"bootstrap_servers": "127.0.0.1:9092"}}, "console": {}}
    with pytest.raises(ConfigError, match="console: needs the message store"):
        parse_settings(data, environ={})


def test_openapi_document_and_no_cdn_pages(client: TestClient) -> None:
    document = client.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["components"]["securitySchemes"]) == {"HTTPBasic", "HTTPBearer"}
    assert all(not p.startswith("/console") for p in document["paths"])
    assert client.get("/api/docs").status_code == 404 and client.get("/docs").status_code == 404
    page = client.get("/console/", auth=VIEWER).text
    assert "<script" not in page and "cdn" not in page.lower()
