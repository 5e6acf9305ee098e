"""Fixtures for the runtime tests: real sample messages, free loopback ports, engine subprocesses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.runtime_harness import TESTDATA

SCOUT = TESTDATA / "hl7v2-washu-scout" / "messages"


@pytest.fixture
def scout_messages() -> list[Path]:
    files = sorted(SCOUT.glob("*.hl7"))
    assert files, f"no sample messages in {SCOUT}"
    return files
