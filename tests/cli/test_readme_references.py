"""Every file the README names exists: backticked paths and bare ``*.md`` / ``*.py`` / ``*.yaml`` names."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"

#: paths the engine creates at run time, placeholders and paths inside the container: not repository files.
RUNTIME = (
    "var/", "../var/", "DIR/", "OUT/", "/app/", "done/", "failed/", "rejected/", ".landed/", "summary.json",
    "/livez", "/readyz", "/metrics", "/api/", "/console/", "application/",
)
#: where a bare file name may live (the README's layout table names modules by file name)
SEARCH = [
    REPO,
    REPO / "config",
    *sorted(p for top in ("pipelines", "engine", "tests") for p in (REPO / top).iterdir() if p.is_dir()),
    SHARED / "docs",
    SHARED / "tools" / "fhir-validator",
]
FILE = re.compile(r"\.(py|ya?ml|md|sh|toml|hl7|dcm|log|json|cfg|txt)$")


def _exists(name: str) -> bool:
    if (REPO / name).exists():
        return True
    if "/" in name.rstrip("/"):
        return False  # a path must resolve from the repository root (or ../shared)
    if any((folder / name).exists() for folder in SEARCH):
        return True
    return name.endswith((".hl7", ".dcm", ".log")) and any(SHARED.joinpath("testdata").rglob(name))


def referenced_paths(text: str) -> set[str]:
    names = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        if not re.fullmatch(r"[\w.\-/]+", token) or token.startswith(RUNTIME) or token.startswith("engine."):
            continue
        if re.match(r"[A-Z][A-Z0-9]{2}-\d", token):  # an HL7 field such as OBR-19/20
            continue
        if "/" in token or FILE.search(token):
            names.add(token)
    # bare document / module names in running text, e.g. "(see DEVELOPERS.md)"
    names.update(re.findall(r"(?<![\w/`.-])([\w-]+\.(?:md|py|ya?ml))\b", re.sub(r"`[^`]*`", "", text)))
    return names


def test_every_file_the_readme_names_exists() -> None:
    text = (REPO / "README.md").read_text()
    names = referenced_paths(text)
    assert {"config/local.yaml", "tests/runtime/test_loss.py", "compose.yaml", "Dockerfile"} & names
    missing = sorted(n for n in names if not _exists(n))
    assert not missing, f"README.md names files that do not exist: {missing}"


def test_the_checker_finds_a_dangling_name() -> None:
    names = referenced_paths("see `config/nope.yaml` and DEVELOPERS.md, not `var/outbox/`")
    assert names == {"config/nope.yaml", "DEVELOPERS.md"}
    assert not any(_exists(n) for n in names)
