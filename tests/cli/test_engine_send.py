"""``engine send`` against a scripted MLLP peer on a real socket: framing, ACK codes, NE, exit codes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli import main
from engine.cmd_send import messages_of, msa, wants_ack

REPO = Path(__file__).resolve().parents[2]
SB, EB, CR = b"\x0b", b"\x1c", b"\r"


def _message(control_id: str, accept: str = "", application: str = "") -> bytes:
    return (
        f"MSH|^~\\&|RIS|SITE|ENGINE|SITE|20260101000000||ORU^R01|{control_id}|P|2.5.1|||{accept}|{application}\r"
        "PID|1||P1\rOBR|1||F1|71020^CHEST^CPT4\rOBX|1|TX|71020&GDT||Normal.||||||F"
    ).encode()


class Peer:
    """Accepts one connection, records each frame and answers with ``codes`` in turn (None: no answer)."""

    def __init__(self, codes: list[str | None]) -> None:
        self.codes = codes
        self.frames: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            buffer = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                while EB + CR in buffer:
                    frame, buffer = buffer.split(EB + CR, 1)
                    assert frame.startswith(SB)
                    self.frames.append(frame[1:])
                    code = self.codes.pop(0) if self.codes else "AA"
                    if code is not None:
                        msh = f"MSH|^~\\&|ENGINE|SITE|RIS|SITE|20260101||ACK|A{len(self.frames)}|P|2.5.1"
                        ack = f"{msh}\rMSA|{code}|X|reason {code}"
                        conn.sendall(SB + ack.encode() + EB + CR)

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def peer_factory() -> Iterator[type[Peer]]:
    made: list[Peer] = []

    class _Peer(Peer):
        def __init__(self, codes: list[str | None]) -> None:
            super().__init__(codes)
            made.append(self)

    yield _Peer
    for p in made:
        p.close()


def test_every_message_of_a_file_is_one_frame(
    tmp_path: Path, peer_factory: type[Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "two.hl7"
    # a byte-order mark, LF segment ends, two messages back to back: what mllp_send --loose mis-splits
    file.write_bytes(b"\xef\xbb\xbf" + _message("C1").replace(CR, b"\n") + b"\n" + _message("C2").replace(CR, b"\n"))
    peer = peer_factory(["AA", "CA"])
    assert main(["send", "--port", str(peer.port), str(file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{file}#1 C1 AA reason AA", f"{file}#2 C2 CA reason CA"]
    assert [f.split(b"|")[9] for f in peer.frames] == [b"C1", b"C2"]
    assert not any(f.startswith(b"\xef\xbb\xbf") for f in peer.frames)


def test_error_answers_and_junk_exit_1(
    tmp_path: Path, peer_factory: type[Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "mixed.hl7"
    file.write_bytes(b"garbage line\r" + _message("C1") + b"\r" + _message("C2"))
    peer = peer_factory(["AR"])
    assert main(["send", "--port", str(peer.port), str(file)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{file}#1 - not sent: not an HL7 v2 message (no MSH segment)"
    assert out[1:] == [f"{file}#2 C1 AR reason AR", f"{file}#3 C2 AA reason AA"]


def test_no_acknowledgement_requested_is_not_awaited(
    tmp_path: Path, peer_factory: type[Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "ne.hl7"
    file.write_bytes(_message("N1", "NE", "NE") + b"\r" + _message("N2", "AL", "NE"))
    peer = peer_factory([None, "CA"])  # the peer honours NE: no answer to the first message
    assert main(["send", "--port", str(peer.port), "--timeout", "5", str(file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{file}#1 N1 sent (MSH-15/16: no acknowledgement requested)", f"{file}#2 N2 CA reason CA"]
    assert wants_ack(_message("x", "NE", "AL")) and not wants_ack(_message("x", "NE", ""))


def test_silence_is_a_failure(tmp_path: Path, peer_factory: type[Peer], capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "one.hl7"
    file.write_bytes(_message("S1"))
    peer = peer_factory([None])
    assert main(["send", "--port", str(peer.port), "--timeout", "0.5", str(file)]) == 1
    assert "S1 no acknowledgement" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    (tmp_path / "m.hl7").write_bytes(_message("U1"))
    for args in (["--port", str(port), str(tmp_path / "m.hl7")], ["--port", str(port), str(tmp_path / "missing.hl7")]):
        result = subprocess.run(
            [sys.executable, "-m", "engine", "send", *args], capture_output=True, text=True, cwd=REPO
        )
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_utf16_file_and_msa_reader() -> None:
    text = _message("U16").decode()
    [message] = messages_of(b"\xff\xfe" + text.encode("utf-16-le"))
    assert message is not None and message.split(b"|")[9] == b"U16"
    assert msa(b"MSH|^~\\&|a\rMSA|AE|X|bad thing\r") == ("AE", "bad thing")
    assert msa(b"MSH#^~\\&#a\rMSA#AR#X\r") == ("AR", "")


def test_msa_text_separator_escapes_are_undone() -> None:
    """MSA-3 is HL7-escaped by the receiver (a message type ``OMI^O23`` arrives as ``OMI\\S\\O23``)."""
    assert msa(b"MSH|^~\\&|a\rMSA|AR|X|not a report: OMI\\S\\O23\r") == ("AR", "not a report: OMI^O23")
    # one pass: an escaped escape character stays literal, other encoding characters follow MSH-2
    assert msa(b"MSH|^~\\&|a\rMSA|AE|X|a\\E\\S\\E\\b \\F\\ \\T\\ \\R\\\r") == ("AE", "a\\S\\b | & ~")
    assert msa(b"MSH|$~!&|a\rMSA|AR|X|OMI!S!O23 \\S\\\r") == ("AR", "OMI$O23 \\S\\")
