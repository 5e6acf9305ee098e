"""The README's "Try it" recipe lines, run as written on every shared sample against a real `engine run`.

The lines are read from README.md (the ones naming MESSAGE.hl7 and REPORT.dcm), so README and test cannot
drift apart; only the ports and the file are substituted. For each file the service must produce the Bundles
`engine map` produces from the same file (same sender profiles); a file that `engine map` converts
completely must be acknowledged without error (exit 0), and one with filtered or rejected messages must be
answered so (`AR`/`AE`, C-STORE failure status; `ack: converted`).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from engine.convert import Converter
from pipelines.context import MappingContext
from tests.runtime.runtime_harness import EngineConfig, EngineProcess

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO.parent / "shared" / "testdata"
#: dcmtk cannot parse this file at all (Sequence Delimitation Item missing); engine map rejects it too.
DCMTK_UNREADABLE = {"Tag-0040-A170-VR-CS.dcm"}


def recipe(marker: str) -> list[str]:
    """The README command line that names ``marker`` (MESSAGE.hl7 / REPORT.dcm), comment stripped."""
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if marker in line and "`" not in line]
    assert len(lines) == 1, f"README: expected one recipe line with {marker}, found {lines}"
    return shlex.split(lines[0], comments=True)


def samples() -> list[Path]:
    return [
        p
        for p in sorted(TESTDATA.rglob("*"))
        if p.is_file() and p.suffix not in (".md", ".json") and not p.name.startswith(".")
    ]


def _context() -> MappingContext:
    data = yaml.safe_load((REPO / "config" / "mapping-senders.yaml").read_text())
    return MappingContext.from_mapping(data["mapping"])


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    if shutil.which("storescu") is None:
        pytest.skip("dcmtk storescu not installed (scripts/install-system-deps.sh)")
    cfg = EngineConfig(tmp_path_factory.mktemp("recipes"))
    cfg.extra = {"mapping": yaml.safe_load((REPO / "config" / "mapping-senders.yaml").read_text())["mapping"]}
    process = EngineProcess(cfg)
    process.start()
    try:
        yield process
    finally:
        process.terminate()


def _command(template: list[str], engine: EngineProcess, path: Path) -> list[str]:
    ports = {"2575": str(engine.config.mllp_port), "11112": str(engine.config.dicom_port)}
    out = []
    for token in template:
        if token in ("MESSAGE.hl7", "REPORT.dcm"):
            token = str(path)
        elif token == ".venv/bin/engine":
            token = str(Path(sys.executable).with_name("engine"))
        out.append(ports.get(token, token))
    return out


def test_readme_recipes_on_every_shared_sample(engine: EngineProcess) -> None:
    hl7_line, dicom_line = recipe("MESSAGE.hl7"), recipe("REPORT.dcm")
    converter = Converter(_context())
    files = samples()
    assert len(files) >= 70
    failures: list[str] = []
    for path in files:
        dicom = path.suffix == ".dcm"
        expected = converter.convert(path.read_bytes())
        command = _command(dicom_line if dicom else hl7_line, engine, path)
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
        name = str(path.relative_to(TESTDATA))
        if path.name in DCMTK_UNREADABLE:
            assert result.returncode != 0 and "Parse error in sequence (0040,a170)" in result.stderr, name
            assert not expected.outputs, name
            continue
        clean = not expected.rejections and not expected.filtered
        if clean and result.returncode != 0:
            failures.append(f"{name}: exit {result.returncode}: {(result.stdout + result.stderr)[-300:]}")
            continue
        if not clean:  # the sender is told: AR (not a report) / AE (not converted); C-STORE 0xC001 / 0xC002
            if dicom and result.returncode == 0:
                failures.append(f"{name}: filtered/rejected by engine map but stored as converted (0x0000)")
                continue
            if not dicom:
                # per message: AR / AE, "not sent" (junk between log frames), or CA only when the message's
                # MSH-15/16 asked for an accept acknowledgement and no application acknowledgement
                told = {line.split()[2] for line in result.stdout.splitlines() if len(line.split()) > 2}
                if result.returncode not in (0, 1) or not (told & {"AR", "AE", "not"} or told <= {"CA", "sent"}):
                    failures.append(f"{name}: exit {result.returncode}, ACKs {sorted(told)}: {result.stderr[-300:]}")
                    continue
        wanted = {o.bundle_id for o in expected.outputs}
        deadline = time.monotonic() + 60
        while True:
            present = {p.stem for p in engine.config.outbox.glob("*.json")}
            if wanted <= present or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not wanted <= present:
            failures.append(f"{name}: {len(wanted - present)} of {len(wanted)} Bundles missing")
    assert not failures, "\n".join(failures)
    # nothing left unfinished, and the service made nothing engine map would not make
    status = subprocess.run(
        [sys.executable, "-m", "engine", "status", "--config", str(engine.config_path)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout)["unfinished"] == 0
    made = {o.bundle_id for p in files for o in converter.convert(p.read_bytes()).outputs}
    assert {p.stem for p in engine.config.outbox.glob("*.json")} == made


def test_recipe_lines_are_the_documented_tools() -> None:
    hl7_line, dicom_line = recipe("MESSAGE.hl7"), recipe("REPORT.dcm")
    assert hl7_line[:2] == [".venv/bin/engine", "send"] and "--port" in hl7_line
    assert dicom_line[0] == "storescu" and "-R" in dicom_line and re.fullmatch(r"ENGINE", dicom_line[3])
