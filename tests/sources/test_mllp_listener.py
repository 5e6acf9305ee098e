"""MLLP listener against real peers over 127.0.0.1: python-hl7's MLLPClient and mllp_send CLI, raw sockets."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7.client import MLLPClient

from engine.sources.base import CONTENT_HL7V2, Landing
from engine.sources.mllp import MllpListener, MllpSettings
from engine.sources.mllp_framing import CR, EB, SB, frame
from tests.sources.source_helpers import TESTDATA, FailingLanding, SlowLanding, SqliteLanding, wait_until_refused

SAMPLES = sorted(TESTDATA.glob("hl7v2-*/*.hl7")) + sorted(TESTDATA.glob("hl7v2-washu-scout/messages/*.hl7"))
BULK = TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


def bulk_messages() -> list[bytes]:
    """The 900 ORU of the bulk file (one message per line, segments separated by CR)."""
    return [line.rstrip(b"\r") for line in BULK.read_bytes().split(b"\n") if line.startswith(b"MSH")]


def msh_fields(message: bytes, codec: str = "latin-1") -> list[str]:
    """Independent MSH reader for assertions: fields[n] is MSH-(n+1)."""
    text = message.decode(codec)
    text = text.removeprefix("\ufeff").removeprefix("\xef\xbb\xbf")
    first = re.split(r"[\r\n]", text, maxsplit=1)[0]
    return first.split(first[3])


def set_msh_field(message: bytes, number: int, value: bytes) -> bytes:
    """Replace MSH-``number`` (number >= 3) of a '|' delimited message."""
    segment, _, rest = message.partition(b"\r")
    fields = segment.split(b"|")
    fields += [b""] * (number - len(fields))
    fields[number - 1] = value  # fields[0] is "MSH", fields[n-1] is MSH-n
    return b"|".join(fields) + b"\r" + rest


def recv_frame(sock: socket.socket | ssl.SSLSocket, timeout: float = 10.0) -> bytes:
    """Read one MLLP frame and return its content; b"" when the peer closed the connection."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(EB + CR):
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    assert data.startswith(SB), data[:20]
    return data[1:-2]


def parse_ack(ack: bytes, codec: str = "ascii") -> hl7.Message:
    return hl7.parse(ack.decode(codec))


def field(msg: hl7.Message, segment: str, number: int) -> str:
    return str(msg.segment(segment)[number])


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[MllpListener] = []

    def _serve(landing: Landing, **settings: Any) -> MllpListener:
        listener = MllpListener(MllpSettings.from_mapping({"host": "127.0.0.1", "port": 0, **settings}), landing)
        listener.start()
        started.append(listener)
        return listener

    yield _serve
    for listener in started:
        listener.stop(timeout=5)


def exchange(client: MLLPClient, message: bytes) -> bytes:
    client.socket.sendall(frame(message))
    return recv_frame(client.socket)


def assert_aa(ack: bytes, original: bytes, code: str = "AA") -> None:
    fields = msh_fields(original)
    parsed = parse_ack(ack, "latin-1")
    assert field(parsed, "MSA", 1) == code
    assert field(parsed, "MSA", 2) == fields[9]
    assert field(parsed, "MSH", 3) == fields[4] and field(parsed, "MSH", 4) == fields[5]
    assert field(parsed, "MSH", 5) == fields[2] and field(parsed, "MSH", 6) == fields[3]
    assert field(parsed, "MSH", 12) == fields[11].split("^")[0]
    trigger = fields[8].split("^")[1]
    assert field(parsed, "MSH", 9) in (f"ACK^{trigger}^ACK", f"ACK^{trigger}")
    assert re.fullmatch(r"[0-9A-F]{20}", field(parsed, "MSH", 10))


def test_samples_are_acknowledged_after_landing_with_original_bytes(serve: Any, landing: SqliteLanding) -> None:
    assert len(SAMPLES) >= 40
    listener = serve(landing)
    with MLLPClient("127.0.0.1", listener.port) as client:
        for path in SAMPLES:
            raw = path.read_bytes()
            ack = client.send_message(raw)  # python-hl7's client frames the bytes unchanged
            assert ack.startswith(SB) and ack.endswith(EB + CR), path.name
            assert_aa(ack[1:-2], raw)
    rows = landing.rows()
    assert [r[0] for r in rows] == [p.read_bytes() for p in SAMPLES]
    for (payload, content_type, source, headers), path in zip(rows, SAMPLES, strict=True):
        fields = msh_fields(payload)
        assert content_type == CONTENT_HL7V2 and source == "mllp"
        assert headers["hl7.control-id"] == fields[9], path.name
        assert headers["hl7.message-type"] == fields[8]
        assert headers["hl7.version"] == fields[11].split("^")[0]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", headers["source.endpoint"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", headers["received.at"])
        assert set(headers) <= {
            "hl7.control-id", "hl7.message-type", "hl7.version", "hl7.charset", "source.endpoint", "received.at",
        }  # fmt: skip


def test_mllp_send_cli(serve: Any, landing: SqliteLanding) -> None:
    mllp_send = Path(sys.executable).with_name("mllp_send")
    if not mllp_send.exists():
        mllp_send = Path(shutil.which("mllp_send") or "mllp_send")
    path = TESTDATA / "hl7v2-washu-scout" / "messages" / "scout-13-v2.7-Final-20250814-22.hl7"
    listener = serve(landing)
    result = subprocess.run(
        [str(mllp_send), "--loose", "-f", str(path), "-p", str(listener.port), "127.0.0.1"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert b"MSA|AA|" + msh_fields(path.read_bytes())[9].encode() in result.stdout
    [(payload, *_)] = landing.rows()
    assert payload == path.read_bytes().rstrip(b"\r\n")


def test_persistent_connection_carries_many_messages(serve: Any, landing: SqliteLanding) -> None:
    messages = bulk_messages()[:300]
    listener = serve(landing)
    with MLLPClient("127.0.0.1", listener.port) as client:
        for message in messages:
            assert_aa(exchange(client, message), message)
    assert [r[0] for r in landing.rows()] == messages
    assert listener.counters["connections"] == 1 and listener.counters["accepted"] == 300


def test_concurrent_connections(serve: Any, landing: SqliteLanding) -> None:
    messages = bulk_messages()
    listener = serve(landing)
    errors: list[str] = []

    def sender(worker: int) -> None:
        try:
            with MLLPClient("127.0.0.1", listener.port) as client:
                for i in range(25):
                    message = messages[worker * 25 + i]
                    ack = parse_ack(exchange(client, message))
                    if field(ack, "MSA", 1) != "AA" or field(ack, "MSA", 2) != msh_fields(message)[9]:
                        errors.append(f"worker {worker} message {i}: {ack}")
        except Exception as exc:  # surfaced below
            errors.append(f"worker {worker}: {exc!r}")

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(r[0] for r in landing.rows()) == sorted(messages[:200])
    assert listener.counters["connections"] == 8


def test_oversized_message_is_rejected_and_connection_closed(serve: Any, landing: SqliteLanding) -> None:
    big = next(m for m in bulk_messages() if len(m) > 6000)
    small = bulk_messages()[0]
    listener = serve(landing, max_message_bytes=4096)
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(frame(small))
        assert field(parse_ack(recv_frame(sock)), "MSA", 1) == "AA"
        sock.sendall(frame(big))
        ack = parse_ack(recv_frame(sock))
        assert field(ack, "MSA", 1) == "AR"
        assert field(ack, "MSA", 2) == msh_fields(big)[9]
        assert "exceeds 4096 bytes" in field(ack, "MSA", 3)
        assert recv_frame(sock) == b""  # closed by the listener
    # an unterminated frame that outgrows the limit: rejected and closed as well
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(SB + big[:3000])
        sock.sendall(big[3000:])
        assert field(parse_ack(recv_frame(sock)), "MSA", 1) == "AR"
        assert recv_frame(sock) == b""
    assert [r[0] for r in landing.rows()] == [small]
    assert listener.counters["too_large"] == 2


def test_garbage_and_broken_framing(serve: Any, landing: SqliteLanding, caplog: pytest.LogCaptureFixture) -> None:
    good = bulk_messages()[:3]
    listener = serve(landing)
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + frame(good[0]))  # junk before SB is skipped
        assert field(parse_ack(recv_frame(sock)), "MSA", 1) == "AA"
        sock.sendall(frame(b"this is not HL7"))  # framed, but no MSH
        ack = parse_ack(recv_frame(sock))
        assert (field(ack, "MSA", 1), field(ack, "MSA", 2)) == ("AR", "")
        assert "no MSH segment" in field(ack, "MSA", 3)
        # a sender that restarts mid-frame: the unfinished part is dropped, the new frame is served
        sock.sendall(SB + good[1][:100] + frame(good[1]))
        assert field(parse_ack(recv_frame(sock)), "MSA", 2) == msh_fields(good[1])[9]
        # the end block split across two TCP segments
        sock.sendall(SB + good[2] + EB)
        time.sleep(0.05)
        sock.sendall(CR)
        assert field(parse_ack(recv_frame(sock)), "MSA", 2) == msh_fields(good[2])[9]
    # a connection that ends inside a frame (no end block): nothing landed, no crash
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(SB + good[0][:500])
    with MLLPClient("127.0.0.1", listener.port) as client:  # still serving
        assert_aa(exchange(client, good[0]), good[0])
    assert [r[0] for r in landing.rows()] == [good[0], good[1], good[2], good[0]]
    assert listener.counters["junk_bytes"] > 0


def test_idle_connection_is_closed(serve: Any, landing: SqliteLanding) -> None:
    listener = serve(landing, idle_timeout_s=0.3)
    message = bulk_messages()[0]
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(frame(message))
        assert field(parse_ack(recv_frame(sock)), "MSA", 1) == "AA"
        assert recv_frame(sock, timeout=10) == b""  # then closed by the listener (a timeout would raise)
    assert listener.counters["idle_closed"] == 1


def test_enhanced_mode_accept_acknowledgements(serve: Any, landing: SqliteLanding) -> None:
    first, second, third, fourth = bulk_messages()[:4]
    listener = serve(landing, ack_mode="enhanced")
    with MLLPClient("127.0.0.1", listener.port) as client:
        assert_aa(exchange(client, first), first, code="CA")  # MSH-15 empty: configured enhanced
        assert_aa(exchange(client, set_msh_field(second, 15, b"AL")), second, code="CA")
        client.socket.sendall(frame(set_msh_field(third, 15, b"NE")))  # never acknowledge this one
        client.socket.sendall(frame(set_msh_field(fourth, 15, b"ER")))  # acknowledge errors only
        client.socket.sendall(frame(set_msh_field(first, 15, b"SU")))
        assert_aa(recv_frame(client.socket), first, code="CA")  # the only answer for the last three
    assert len(landing.rows()) == 5


def test_original_mode_answers_aa_even_when_msh15_is_set(serve: Any, landing: SqliteLanding) -> None:
    message = set_msh_field(bulk_messages()[0], 15, b"AL")
    listener = serve(landing)
    with MLLPClient("127.0.0.1", listener.port) as client:
        assert_aa(exchange(client, message), message)


def test_msh18_charsets_read_msh_but_land_original_bytes(serve: Any, landing: SqliteLanding) -> None:
    base = bulk_messages()[0]
    latin1 = set_msh_field(set_msh_field(base, 18, b"8859/1"), 3, "RÖNTGEN".encode("latin-1"))
    latin1 += b"\rNTE|1||Befund: L\xe4sion, \xd6dem"
    utf8 = set_msh_field(set_msh_field(base, 18, b"UNICODE UTF-8"), 3, "RÖNTGEN".encode())
    listener = serve(landing)
    with MLLPClient("127.0.0.1", listener.port) as client:
        ack = parse_ack(exchange(client, latin1), "iso8859-1")
        assert (field(ack, "MSA", 1), field(ack, "MSH", 5), field(ack, "MSH", 18)) == ("AA", "RÖNTGEN", "8859/1")
        ack = parse_ack(exchange(client, utf8), "utf-8")
        assert (field(ack, "MSA", 1), field(ack, "MSH", 5), field(ack, "MSH", 18)) == ("AA", "RÖNTGEN", "UNICODE UTF-8")
    rows = landing.rows()
    assert [r[0] for r in rows] == [latin1, utf8]  # not re-encoded
    assert [r[3]["hl7.charset"] for r in rows] == ["8859/1", "UNICODE UTF-8"]


def test_transient_landing_failure_answers_ae(serve: Any) -> None:
    failing = FailingLanding()
    message = bulk_messages()[0]
    v23 = next(m for m in bulk_messages() if msh_fields(m)[11] == "2.3")
    listener = serve(failing)
    with MLLPClient("127.0.0.1", listener.port) as client:
        ack = parse_ack(exchange(client, message))
        assert field(ack, "MSA", 1) == "AE" and field(ack, "MSA", 2) == msh_fields(message)[9]
        assert "retry later" in field(ack, "MSA", 3) and "disk full" not in field(ack, "MSA", 3)
        assert field(ack, "ERR", 3) == "207^Application internal error^HL70357" and field(ack, "ERR", 4) == "E"
        ack = parse_ack(exchange(client, v23))  # same connection, pre-2.5 ERR layout
        assert field(ack, "MSA", 1) == "AE"
        assert field(ack, "ERR", 1) == "^^^207&Application internal error&HL70357"
    assert failing.calls == 2


def _client_context(cert: Path, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    if client_cert:
        ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    return ctx


def test_tls_round_trip(serve: Any, landing: SqliteLanding, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    message = bulk_messages()[0]
    listener = serve(landing, tls={"cert": str(cert), "key": str(key)})
    with MLLPClient("127.0.0.1", listener.port) as client:
        client.socket = _client_context(cert).wrap_socket(client.socket, server_hostname="127.0.0.1")
        assert_aa(client.send_message(message)[1:-2], message)
    # a plain-TCP peer on the TLS port gets no ACK and does not disturb the listener
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(frame(message))
        with contextlib.suppress(ConnectionResetError):
            assert recv_frame(sock) == b""
    with MLLPClient("127.0.0.1", listener.port) as client:
        client.socket = _client_context(cert).wrap_socket(client.socket, server_hostname="localhost")
        assert_aa(client.send_message(message)[1:-2], message)
    assert [r[0] for r in landing.rows()] == [message, message]


def test_tls_client_certificate_required(serve: Any, landing: SqliteLanding, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    message = bulk_messages()[0]
    tls = {"cert": str(cert), "key": str(key), "ca": str(cert), "require_client_cert": True}
    listener = serve(landing, tls=tls)
    # the handshake fails on write or read
    with pytest.raises((ssl.SSLError, ConnectionError)), MLLPClient("127.0.0.1", listener.port) as client:
        client.socket = _client_context(cert).wrap_socket(client.socket, server_hostname="127.0.0.1")
        client.socket.sendall(frame(message))
        if recv_frame(client.socket) == b"":
            raise ConnectionError("closed")
    with MLLPClient("127.0.0.1", listener.port) as client:
        ctx = _client_context(cert, (cert, key))
        client.socket = ctx.wrap_socket(client.socket, server_hostname="127.0.0.1")
        assert_aa(client.send_message(message)[1:-2], message)
    assert [r[0] for r in landing.rows()] == [message]


def test_stop_finishes_in_flight_messages(landing: SqliteLanding) -> None:
    slow = SlowLanding(landing)
    listener = MllpListener(MllpSettings(port=0), slow)
    listener.start()
    idle = socket.create_connection(("127.0.0.1", listener.port))  # an idle peer must not delay stop
    message = bulk_messages()[0]
    acks: list[bytes] = []
    client = MLLPClient("127.0.0.1", listener.port)
    sender = threading.Thread(target=lambda: acks.append(exchange(client, message)))
    sender.start()
    assert slow.started.wait(10)
    stopper = threading.Thread(target=listener.stop, kwargs={"timeout": 10})
    stopper.start()
    assert wait_until_refused(listener.port)  # no longer accepting
    assert acks == []
    slow.release.set()
    sender.join(10)
    stopper.join(15)
    assert not stopper.is_alive()
    assert_aa(acks[0], message)  # answered after the landing returned, before the listener closed
    assert [r[0] for r in landing.rows()] == [message]
    idle.settimeout(5)
    assert idle.recv(10) == b""
    idle.close()
    client.close()


@pytest.mark.parametrize(
    ("mapping", "error"),
    [
        ({"prot": 2575}, "unknown key(s) prot"),
        ({"port": "2575"}, "mllp.port: expected an integer"),
        ({"port": 70000}, "mllp.port: must be between 0 and 65535"),
        ({"max_message_bytes": 0}, "mllp.max_message_bytes"),
        ({"idle_timeout_s": -1}, "mllp.idle_timeout_s"),
        ({"ack_mode": "auto"}, "mllp.ack_mode: expected 'original' or 'enhanced'"),
        ({"tls": {"cert": "c.pem"}}, "mllp.tls.key: required"),
        ({"tls": {"cert": "c.pem", "key": "k.pem", "require_client_cert": True}}, "needs mllp.tls.ca"),
        ({"tls": {"cert": "c.pem", "key": "k.pem", "verify": True}}, "mllp.tls: unknown key(s) verify"),
    ],
)
def test_settings_errors(mapping: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        MllpSettings.from_mapping(mapping)


def test_settings_defaults_and_missing_tls_file(tmp_path: Path) -> None:
    settings = MllpSettings.from_mapping({"host": "0.0.0.0", "port": 2575, "idle_timeout_s": 30})
    assert (settings.host, settings.port, settings.idle_timeout_s, settings.ack_mode) == (
        "0.0.0.0",
        2575,
        30.0,
        "original",
    )
    assert settings.tls is None and settings.max_message_bytes == 16 * 1024 * 1024
    broken = MllpSettings.from_mapping({"port": 0, "tls": {"cert": str(tmp_path / "no.pem"), "key": "k.pem"}})
    with pytest.raises(ValueError, match=r"tls\.cert: file not found"):
        MllpListener(broken, FailingLanding()).start()


def test_port_in_use_fails_start(serve: Any, landing: SqliteLanding) -> None:
    first = serve(landing)
    with pytest.raises(OSError):
        MllpListener(MllpSettings(port=first.port), landing).start()
