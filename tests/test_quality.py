"""Project rules that must hold on every commit: the layering (`pipelines` never imports `engine`, and
does no I/O), lint and strict typing."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_PIPELINES = {"engine", "socket", "asyncio", "subprocess", "time", "random", "requests", "httpx", "kafka"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_pipelines_are_pure_and_never_import_the_runtime() -> None:
    offenders = {}
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        bad = _imports(path) & FORBIDDEN_IN_PIPELINES
        source = path.read_text(encoding="utf-8")
        if "open(" in source.replace("urlopen(", "") or "datetime.now" in source or "uuid4" in source:
            bad.add("I/O, clock or randomness")
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders


@pytest.mark.skipif(shutil.which("ruff", path=str(Path(sys.executable).parent)) is None, reason="ruff not installed")
def test_ruff_clean() -> None:
    ruff = str(Path(sys.executable).parent / "ruff")
    proc = subprocess.run([ruff, "check", "engine", "pipelines", "tests", "bench"], cwd=ROOT, capture_output=True)
    assert proc.returncode == 0, proc.stdout.decode()[-3000:]


@pytest.mark.skipif(shutil.which("mypy", path=str(Path(sys.executable).parent)) is None, reason="mypy not installed")
def test_mypy_strict_clean() -> None:
    mypy = str(Path(sys.executable).parent / "mypy")
    proc = subprocess.run([mypy], cwd=ROOT, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout.decode()[-3000:]
