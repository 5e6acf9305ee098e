"""MLLP listener against real peers over 127.0.0.1: python-hl7's MLLPClient and mllp_send CLI, raw sockets."""

from __future__ import annotations

import contextlib
import json
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

from engine.cmd_map import load_mapping_context
from engine.convert import Converter
from engine.observability.metrics import Metrics
from engine.sinks.dlq_folder import FolderDeadLetters
from engine.sources.base import CONTENT_HL7V2, Landing
from engine.sources.door import DoorRejects
from engine.sources.mllp import MllpListener, MllpSettings
from engine.sources.mllp_framing import CR, EB, SB, frame
from tests.sources.source_helpers import TESTDATA, FailingLanding, SlowLanding, SqliteLanding, wait_until_refused

SAMPLES = sorted(TESTDATA.glob("hl7v2-*/*.hl7")) + sorted(TESTDATA.glob("hl7v2-washu-scout/messages/*.hl7"))
BULK = TESTDATA / "hl7v2-washu-scout" / "bulk" / "scout-all-oru.hl7"


def bulk_messages() -> list[bytes]:
    """The 900 ORU of the bulk file (one message per line, segments separated by CR)."""
    return [line.rstrip(b"\r") for line in BULK.read_bytes().split(b"\n") if line.startswith(b"MSH")]


def reports() -> list[bytes]:
    """Bulk messages that convert (the feed also has status-only ORUs, which are filtered)."""
    return [m for m in bulk_messages()[:40] if CONVERTER.convert(m).outputs]


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


_UNREAD: dict[int, bytes] = {}  # bytes read past the first frame, per socket (two ACKs can share a read)


def recv_frame(sock: socket.socket | ssl.SSLSocket, timeout: float = 10.0) -> bytes:
    """Read one MLLP frame and return its content; b"" when the peer closed the connection."""
    sock.settimeout(timeout)
    data = _UNREAD.pop(id(sock), b"")
    while EB + CR not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    end = data.index(EB + CR)
    if data[end + 2 :]:
        _UNREAD[id(sock)] = data[end + 2 :]
    assert data.startswith(SB), data[:20]
    return data[1:end]


def parse_ack(ack: bytes, codec: str = "ascii") -> hl7.Message:
    return hl7.parse(ack.decode(codec))


def field(msg: hl7.Message, segment: str, number: int) -> str:
    return str(msg.segment(segment)[number])


CONVERTER = Converter(load_mapping_context(None))  # the shipped sender profiles, as `engine run` loads them


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start listeners whose door rejections go to ``tmp_path/dlq`` and ``listener.door.metrics``."""
    started: list[MllpListener] = []

    def _serve(landing: Landing, **settings: Any) -> MllpListener:
        door = DoorRejects(FolderDeadLetters(tmp_path / "dlq"), Metrics())
        listener = MllpListener(
            MllpSettings.from_mapping({"host": "127.0.0.1", "port": 0, **settings}),
            landing,
            converter=CONVERTER,
            door=door,
        )
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
    listener = serve(landing, ack="stored")  # AA = stored (orders and lab results included)
    with MLLPClient("127.0.0.1", listener.port) as client:
        for path in SAMPLES:
            raw = path.read_bytes()
            ack = client.send_message(raw)  # python-hl7's client frames the bytes unchanged
            assert ack.startswith(SB) and ack.endswith(EB + CR), path.name
            enhanced = any(msh_fields(raw)[14:16])  # MSH-15/16 valued: enhanced mode (2.9.3), accept ACK
            assert_aa(ack[1:-2], raw, code="CA" if enhanced else "AA")
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
    listener = serve(landing, ack="stored")
    with MLLPClient("127.0.0.1", listener.port) as client:
        for message in messages:
            assert_aa(exchange(client, message), message)
    assert [r[0] for r in landing.rows()] == messages
    assert listener.counters["connections"] == 1 and listener.counters["accepted"] == 300


def test_concurrent_connections(serve: Any, landing: SqliteLanding) -> None:
    messages = bulk_messages()
    listener = serve(landing, ack="stored")
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


def test_garbage_and_broken_framing(serve: Any, landing: SqliteLanding, tmp_path: Path) -> None:
    good = reports()[:3]
    listener = serve(landing)
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + frame(good[0]))  # junk before SB: answered, kept
        junk = parse_ack(recv_frame(sock))
        assert (field(junk, "MSA", 1), field(junk, "MSA", 2)) == ("AR", "")
        assert "outside an MLLP frame" in field(junk, "MSA", 3)
        assert field(parse_ack(recv_frame(sock)), "MSA", 1) == "AA"
        sock.sendall(frame(b"this is not HL7"))  # framed, but no MSH
        ack = parse_ack(recv_frame(sock))
        assert (field(ack, "MSA", 1), field(ack, "MSA", 2)) == ("AR", "")
        assert "no MSH segment" in field(ack, "MSA", 3)
        # a sender that restarts mid-frame: the unfinished part is answered AR (its MSH is readable) and kept
        sock.sendall(SB + good[1][:100] + frame(good[1]))
        abandoned = parse_ack(recv_frame(sock))
        assert (field(abandoned, "MSA", 1), field(abandoned, "MSA", 2)) == ("AR", msh_fields(good[1])[9])
        assert "before the end block" in field(abandoned, "MSA", 3)
        assert field(parse_ack(recv_frame(sock)), "MSA", 2) == msh_fields(good[1])[9]
        # the end block split across two TCP segments
        sock.sendall(SB + good[2] + EB)
        assert field(parse_ack(recv_frame(sock)), "MSA", 2) == msh_fields(good[2])[9]  # EB alone ends it
        sock.sendall(CR)  # the late CR belongs to the trailer: no second answer, no junk
        sock.sendall(SB + good[0] + EB + b"\n")  # EB + LF (a common variant): answered; the LF is noise
        assert field(parse_ack(recv_frame(sock)), "MSA", 2) == msh_fields(good[0])[9]
        sock.sendall(good[1] + EB + CR)  # a message without its start block: answered AR, kept
        missing = parse_ack(recv_frame(sock))
        assert (field(missing, "MSA", 1), field(missing, "MSA", 2)) == ("AR", msh_fields(good[1])[9])
    # a connection that ends inside a frame (no end block): kept in the dead letters, no crash
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(SB + good[0][:500])
    with MLLPClient("127.0.0.1", listener.port) as client:  # still serving
        assert_aa(exchange(client, good[0]), good[0])
    assert [r[0] for r in landing.rows()] == [good[0], good[1], good[2], good[0], good[0]]
    reasons = {"outside-frame": 1, "not-hl7": 1, "abandoned-frame": 1, "no-start-block": 1, "unterminated-frame": 1}
    assert {k[1]: v for k, v in listener.door.counts.items()} == reasons
    metrics = listener.door.metrics.exposition().decode()
    for reason in reasons:
        assert f'engine_ingress_rejected_total{{reason="{reason}",source="mllp"}} 1.0' in metrics
    deadline = time.monotonic() + 5
    while len(list((tmp_path / "dlq").glob("*.json"))) < len(reasons) and time.monotonic() < deadline:
        time.sleep(0.05)  # the closed connection's leftover is kept by the listener thread
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "dlq").glob("*.json")]
    assert sorted(s["headers"]["door.reason"] for s in sidecars) == sorted(reasons)
    assert all(s["error_class"] == "IngressRejected" and s["source"] == "mllp" for s in sidecars)
    kept = {s["headers"]["door.reason"]: (tmp_path / "dlq" / s["payload_file"]).read_bytes() for s in sidecars}
    assert kept["outside-frame"] == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert kept["abandoned-frame"] == good[1][:100] and kept["unterminated-frame"] == good[0][:500]
    assert kept["no-start-block"] == good[1] and kept["not-hl7"] == b"this is not HL7"


def test_idle_connection_is_closed(serve: Any, landing: SqliteLanding) -> None:
    listener = serve(landing, idle_timeout_s=0.3)
    message = bulk_messages()[0]
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(frame(message))
        assert field(parse_ack(recv_frame(sock)), "MSA", 1) == "AA"
        assert recv_frame(sock, timeout=10) == b""  # then closed by the listener (a timeout would raise)
    assert listener.counters["idle_closed"] == 1


ADT = b"MSH|^~\\&|ADT|HOSP|ENGINE|HUB|20250101120000||ADT^A01^ADT_A01|ADT-1|P|2.5.1\rEVN|A01|20250101\rPID|1||X77\r"


def test_enhanced_mode_follows_each_message(serve: Any, landing: SqliteLanding) -> None:
    """HL7 v2.5.1 2.9.3: MSH-15 decides the accept ACK (CA), MSH-16 the application ACK (AA/AE/AR)."""
    first, second, third, fourth, fifth = reports()[:5]
    listener = serve(landing)
    with MLLPClient("127.0.0.1", listener.port) as client:
        assert_aa(exchange(client, first), first)  # MSH-15/16 empty: original mode, AA
        assert_aa(exchange(client, set_msh_field(second, 15, b"AL")), second, code="CA")  # MSH-16 empty: no app ACK
        client.socket.sendall(frame(set_msh_field(third, 15, b"NE")))  # never acknowledge this one
        client.socket.sendall(frame(set_msh_field(fourth, 15, b"ER")))  # accept ACK on errors only
        client.socket.sendall(frame(set_msh_field(first, 15, b"SU")))
        assert_aa(recv_frame(client.socket), first, code="CA")  # the only answer for the last three
        both = set_msh_field(set_msh_field(fifth, 15, b"AL"), 16, b"AL")
        client.socket.sendall(frame(both))
        assert_aa(recv_frame(client.socket), both, code="CA")  # accept ACK first ...
        assert_aa(recv_frame(client.socket), both, code="AA")  # ... then the application ACK, same connection
        adt = ADT.replace(b"|P|2.5.1", b"|P|2.5.1|||NE|ER")  # no accept ACK, application ACK on error only
        client.socket.sendall(frame(adt))
        ar = parse_ack(recv_frame(client.socket))
        assert (field(ar, "MSA", 1), field(ar, "MSA", 2)) == ("AR", "ADT-1")
        app_su = set_msh_field(set_msh_field(second, 15, b"NE"), 16, b"SU")
        client.socket.sendall(frame(app_su))
        assert_aa(recv_frame(client.socket), app_su, code="AA")
    assert len(landing.rows()) == 8


def test_ack_converted_says_what_happened(serve: Any, landing: SqliteLanding) -> None:
    """AA converted and stored; AR filtered (type and reason, ERR 200, no PHI); stored first in every case."""
    report = reports()[0]
    listener = serve(landing)
    with MLLPClient("127.0.0.1", listener.port) as client:
        assert_aa(exchange(client, report), report)
        ar = parse_ack(exchange(client, ADT))
        assert (field(ar, "MSA", 1), field(ar, "MSA", 2)) == ("AR", "ADT-1")
        reason = field(ar, "MSA", 3)
        assert "ADT" in reason and "X77" not in reason  # the type and why; never PID content
        assert field(ar, "ERR", 3) == "200^Unsupported message type^HL70357"
        assert field(ar, "ERR", 8) == reason
    assert [r[0] for r in landing.rows()] == [report, ADT]
    metrics = listener.door.metrics.exposition().decode()
    assert 'engine_ingress_outcomes_total{outcome="filtered",source="mllp"} 1.0' in metrics
    assert 'engine_ingress_outcomes_total{outcome="converted",source="mllp"} 1.0' in metrics
    assert (listener.counters["filtered"], listener.counters["converted"]) == (1, 1)


def test_ack_converted_conversion_failure_is_ae(serve: Any, landing: SqliteLanding) -> None:
    """A report that cannot be converted: stored, AE with the mapper's reason (the worker dead-letters it)."""
    broken = bulk_messages()[0].split(b"\rOBR")[0] + b"\r"  # an ORU^R01 without OBR: not convertible
    listener = serve(landing)
    with MLLPClient("127.0.0.1", listener.port) as client:
        ack = parse_ack(exchange(client, broken))
    assert field(ack, "MSA", 1) in ("AE", "AR") and field(ack, "MSA", 3)
    assert [r[0] for r in landing.rows()] == [broken]
    outcome = "failed" if field(ack, "MSA", 1) == "AE" else "filtered"
    assert listener.counters[outcome] == 1


def test_ack_stored_keeps_the_old_meaning(serve: Any, landing: SqliteLanding) -> None:
    listener = serve(landing, ack="stored")
    with MLLPClient("127.0.0.1", listener.port) as client:
        assert_aa(exchange(client, ADT), ADT)  # AA = stored; the worker filters it later
    assert [r[0] for r in landing.rows()] == [ADT]


def test_batch_in_one_frame_is_stored_and_acknowledged(serve: Any, landing: SqliteLanding) -> None:
    """2.10.3.3: one FHS/BHS frame stored as one unit, answered with FHS/BHS + one ACK per message + BTS/FTS."""
    first, second = reports()[:2]
    batch = (
        b"FHS|^~\\&|RIS|HOSP|ENGINE|HUB|20250101||||FILE-7\rBHS|^~\\&|RIS|HOSP|ENGINE|HUB|20250101||||BATCH-7\r"
        + first + b"\r" + ADT + second + b"\rBTS|3\rFTS|1\r"
    )  # fmt: skip
    listener = serve(landing)
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(SB + batch + EB)  # and without the trailing CR
        answer = recv_frame(sock)
    segments = [s for s in answer.split(b"\r") if s]
    names = [s[:3] for s in segments]
    assert names == [b"FHS", b"BHS", b"MSH", b"MSA", b"MSH", b"MSA", b"ERR", b"MSH", b"MSA", b"BTS", b"FTS"]
    assert segments[0].split(b"|")[11] == b"FILE-7" and segments[1].split(b"|")[11] == b"BATCH-7"
    assert segments[0].split(b"|")[2:4] == [b"ENGINE", b"HUB"]
    msas = [s.split(b"|")[1:3] for s in segments if s.startswith(b"MSA")]
    ids = [msh_fields(m)[9].encode() for m in (first, ADT, second)]
    assert msas == [[b"AA", ids[0]], [b"AR", ids[1]], [b"AA", ids[2]]]
    assert segments[-2] == b"BTS|3"
    [(payload, _, _, headers)] = landing.rows()
    assert payload == batch and headers["hl7.batch"] == "true"


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
        ({"ack_mode": "enhanced"}, "mllp.ack_mode: removed"),
        ({"ack": "always"}, "mllp.ack: expected 'stored' or 'converted'"),
        ({"host": "0.0.0.0"}, "mllp.host: 0.0.0.0 is reachable from other machines"),
        ({"host": "::", "insecure": "yes"}, "mllp.insecure: expected true or false"),
        ({"allowed_peers": "10.0.0.0/8"}, "mllp.allowed_peers: expected a list"),
        ({"allowed_peers": ["10.0.0.300"]}, "is not an IP address or network"),
        ({"tls": {"cert": "c.pem"}}, "mllp.tls.key: required"),
        ({"tls": {"cert": "c.pem", "key": "k.pem", "require_client_cert": True}}, "needs mllp.tls.ca"),
        ({"tls": {"cert": "c.pem", "key": "k.pem", "verify": True}}, "mllp.tls: unknown key(s) verify"),
    ],
)
def test_settings_errors(mapping: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        MllpSettings.from_mapping(mapping)


def test_settings_defaults_and_missing_tls_file(tmp_path: Path) -> None:
    settings = MllpSettings.from_mapping({"host": "0.0.0.0", "port": 2575, "idle_timeout_s": 30, "insecure": True})
    assert (settings.host, settings.port, settings.idle_timeout_s, settings.ack) == ("0.0.0.0", 2575, 30.0, "converted")
    lan = MllpSettings.from_mapping({"host": "192.168.1.5", "allowed_peers": ["10.0.0.0/8", "192.168.1.7"]})
    assert lan.peer_allowed("10.2.3.4") and lan.peer_allowed("192.168.1.7") and not lan.peer_allowed("192.168.1.8")
    assert lan.peer_allowed("::ffff:10.0.0.1") and MllpSettings().peer_allowed("8.8.8.8")
    assert settings.tls is None and settings.max_message_bytes == 16 * 1024 * 1024
    broken = MllpSettings.from_mapping({"port": 0, "tls": {"cert": str(tmp_path / "no.pem"), "key": "k.pem"}})
    with pytest.raises(ValueError, match=r"tls\.cert: file not found"):
        MllpListener(broken, FailingLanding()).start()


def test_port_in_use_fails_start(serve: Any, landing: SqliteLanding) -> None:
    first = serve(landing)
    with pytest.raises(OSError):
        MllpListener(MllpSettings(port=first.port), landing).start()


def test_peer_outside_allowed_peers_is_refused_counted_and_kept(
    serve: Any, landing: SqliteLanding, tmp_path: Path
) -> None:
    listener = serve(landing, allowed_peers=["10.0.0.0/8"])  # 127.0.0.1 is not in it
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        with contextlib.suppress(ConnectionResetError):
            sock.sendall(frame(reports()[0]))
        try:
            answer = recv_frame(sock)
        except ConnectionResetError:  # closed while our frame was unread: the kernel answers with RST
            answer = b""
        assert answer == b""  # closed without an answer: the peer is not ours
    assert landing.rows() == []
    assert listener.door.counts == {("mllp", "refused-peer"): 1}
    [sidecar] = [json.loads(p.read_text()) for p in (tmp_path / "dlq").glob("*.json")]
    assert sidecar["headers"]["door.reason"] == "refused-peer" and sidecar["headers"]["source.endpoint"].startswith(
        "127.0.0.1:"
    )


def test_ack_converted_in_a_process_pool(serve: Any, landing: SqliteLanding) -> None:
    """``convert_processes``: the conversion for the ACK runs in other processes, with the same mapping context."""
    report = reports()[0]
    listener = serve(landing, convert_processes=1)
    with MLLPClient("127.0.0.1", listener.port) as client:
        assert_aa(exchange(client, report), report)
        ar = parse_ack(exchange(client, ADT))
        assert (field(ar, "MSA", 1), field(ar, "MSA", 2)) == ("AR", "ADT-1") and "ADT" in field(ar, "MSA", 3)
    assert [r[0] for r in landing.rows()] == [report, ADT]
