"""The console in a real browser: Debian's headless Chromium driven by Playwright, against ``engine run``.

A message that fails conversion is sent over MLLP to a real engine subprocess (real store, real worker);
the browser logs in (HTTP Basic), finds the dead letter by its control id, opens it and reprocesses it;
the store then shows the replay and the worker's second attempt. Loopback only. Chromium is the system
package (``scripts/install-system-deps.sh``), launched through ``executable_path``: Playwright never
downloads a browser here.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import DEAD_ORU
from tests.runtime.runtime_harness import EngineConfig, EngineProcess, MllpClient, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-test-password"


def _row(db: Path, control_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM messages WHERE control_id = ?", (control_id,)).fetchone()
        if row is None:
            return None
        events = conn.execute("SELECT event FROM message_events WHERE message_id = ? ORDER BY id", (row["id"],))
        return {**dict(row), "events": [e[0] for e in events]}


def _wait(db: Path, control_id: str, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = _row(db, control_id) if db.exists() else None
        if row is not None and predicate(row):
            return row
        time.sleep(0.1)
    raise AssertionError(f"store never reached the expected state: {row}")


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineProcess]:
    monkeypatch.setenv("CONSOLE_TEST_PASSWORD", PASSWORD)
    config = EngineConfig(
        tmp_path,
        extra={
            "console": {
                "host": "127.0.0.1",
                "port": free_port(),
                "users": [{"name": "operator1", "password_env": "CONSOLE_TEST_PASSWORD", "roles": ["operator"]}],
            }
        },
    )
    process = EngineProcess(config)
    process.start()
    yield process
    process.stop_quietly()


def test_console_finds_and_reprocesses_a_dead_letter_in_chromium(engine: EngineProcess, tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/install-system-deps.sh installs it)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    client = MllpClient(engine.config.mllp_port)
    try:
        client.send(DEAD_ORU)
    finally:
        client.close()
    db = engine.config.root / "store" / "messages.db"
    first = _wait(db, "CTRL-DEAD-1", lambda r: r["status"] == "failed")
    assert first["replays"] == 0 and first["error_class"] == "ParseError"

    port = engine.config.extra["console"]["port"]
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            anonymous = browser.new_context()  # no credentials: a Basic challenge, nothing shown
            assert anonymous.request.get(f"{base}/console/messages").status == 401
            context = browser.new_context(http_credentials={"username": "operator1", "password": PASSWORD})
            page = context.new_page()
            page.goto(f"{base}/console/")
            expect(page.locator('#source-counters tr[data-source="mllp"]')).to_contain_text("1")
            page.set_default_timeout(10_000)
            page.get_by_role("link", name="Messages").click()
            page.get_by_label("Control id / SOP Instance UID").fill("CTRL-DEAD-1")
            page.get_by_role("button", name="Search").click()
            page.screenshot(path=str(tmp_path / "console-search.png"), full_page=True)
            rows = page.locator("#results tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("failed")
            expect(rows.first).to_contain_text("truncated message")
            rows.first.get_by_role("link", name=str(first["id"])).click()
            expect(page.locator("#status")).to_have_text("failed")
            expect(page.locator("#history .event")).to_have_text(["received", "converted", "rejected (dead letter)"])
            page.locator("#reprocess").click()
            expect(page.locator("#notice")).to_contain_text("reprocess")
            expect(page.locator("#replays")).to_have_text("1")
            page.screenshot(path=str(tmp_path / "console-message.png"), full_page=True)
        finally:
            browser.close()

    after = _wait(db, "CTRL-DEAD-1", lambda r: r["status"] == "failed" and r["attempts"] == 2)
    assert after["replays"] == 1
    assert after["events"] == ["mapped", "failed", "replayed", "mapped", "failed"]  # + landing (the row itself)
    audit = (engine.config.root / "store" / "console-audit.jsonl").read_text().splitlines()
    assert len(audit) == 1 and '"action": "reprocess"' in audit[0] and '"actor": "operator1"' in audit[0]
