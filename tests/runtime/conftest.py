"""Fixtures for the runtime tests: real sample messages, free loopback ports, engine subprocesses."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

TESTDATA = Path("/work/shared/testdata")
SCOUT = TESTDATA / "hl7v2-washu-scout" / "messages"


def free_port() -> int:
    """A currently free high TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def scout_messages() -> list[Path]:
    files = sorted(SCOUT.glob("*.hl7"))
    assert files, f"no sample messages in {SCOUT}"
    return files
