"""The official HL7 FHIR validator (``../shared/tools/fhir-validator/validate.sh``) for the test suite: one JVM
run per session over every Bundle the tests want checked.

How it is used:

* ``tests/conformance/test_official_validator.py`` checks the Bundles that ``engine map`` makes from every
  shared input folder (``../shared/testdata/hl7v2-*``, ``dicom-sr-*``, ``field-reports``): zero unwaived errors.
* Other tests add their own outputs to the **same JVM run** by registering a producer at import time (module
  level, so it is known when the session fixture first runs)::

      from tests.conformance.official import register

      def _my_bundles(out: Path) -> None:        # write *.json Bundles into ``out``
          ...

      register("publishing", _my_bundles)

      def test_my_bundles_conform(official_validation):
          report = official_validation.group("publishing")   # {file: FileReport}
          assert not official_validation.errors_in(report), official_validation.describe(report)

  A producer that raises makes the group report the exception (the other groups are still validated).
* ``official_validate(paths)`` (fixture of the same name) answers for any Bundle files: from the session run
  when they were part of it, else with one more JVM run for those files (~20-50 s start-up + ~0.4 s a file;
  give that test a ``pytest.mark.timeout``).

A missing validator (no ``validate.sh``, or no ``java``/``javac``/``mvn`` for its first-use set-up) skips
locally and **fails when CI=true**. Waivers are the validator's own (``known-ig-issues.json``, each proven on
the IG's examples); the tests never add one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SHARED, TESTDATA

__all__ = [
    "VALIDATE",
    "FileReport",
    "Group",
    "OfficialValidation",
    "ValidatorUnavailable",
    "bundle_files",
    "map_shared_inputs",
    "register",
    "require_validator",
    "run_validator",
    "session_validation",
    "shared_inputs",
]

VALIDATE = SHARED / "tools" / "fhir-validator" / "validate.sh"
#: One validator run may take a while on a loaded 2-core machine (start-up + ~0.4 s per Bundle).
RUN_TIMEOUT_S = float(os.environ.get("ENGINE_FHIR_VALIDATOR_TIMEOUT", "3600"))
SHARED_GROUP = "shared-testdata"
Producer = Callable[[Path], object]
_PRODUCERS: dict[str, Producer] = {}


class ValidatorUnavailable(RuntimeError):
    """The official validator cannot run on this machine (what is missing is the message)."""


@dataclass(frozen=True)
class FileReport:
    """The validator's verdict on one file: unwaived errors, warnings and waived errors ({path, message}...)."""

    file: Path
    errors: tuple[dict[str, str], ...]
    warnings: tuple[dict[str, str], ...] = ()
    waived: tuple[dict[str, str], ...] = ()


def register(group: str, producer: Producer) -> None:
    """Add ``producer(out_dir)`` (writes FHIR JSON files into ``out_dir``) to the session's validator run."""
    if group == SHARED_GROUP or (group in _PRODUCERS and _PRODUCERS[group] is not producer):
        raise ValueError(f"validator group {group!r} is already registered")
    _PRODUCERS[group] = producer


def require_validator() -> None:
    """Skip (locally) or fail (CI=true) when the validator cannot run here."""
    missing = [t for t in ("java", "javac", "mvn", "flock") if shutil.which(t) is None]
    why = None
    if not VALIDATE.is_file():
        why = f"official FHIR validator not found at {VALIDATE}"
    elif missing:
        why = f"official FHIR validator needs {', '.join(missing)} on PATH"
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why + " (CI=true: a missing validator is a failure)", pytrace=False)
    pytest.skip(why)


def run_validator(paths: Iterable[Path], report_path: Path) -> dict[Path, FileReport]:
    """One JVM run of validate.sh (``--json``) over ``paths``; resolved path -> FileReport.

    Raises ValidatorUnavailable when the tool fails to set up or run (exit code 2, or no report)."""
    files = sorted({Path(p).resolve() for p in paths})
    if not files:
        return {}
    started = time.monotonic()
    proc = subprocess.run(
        [str(VALIDATE), "--json", str(report_path), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
    )
    if proc.returncode not in (0, 1) or not report_path.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise ValidatorUnavailable(f"validate.sh exited {proc.returncode}:\n{tail}")
    out: dict[Path, FileReport] = {}
    for entry in json.loads(report_path.read_text()):
        path = Path(entry["file"]).resolve()
        out[path] = FileReport(
            file=path,
            errors=tuple(entry.get("errors", [])),
            warnings=tuple(entry.get("warnings", [])),
            waived=tuple(entry.get("waived", [])),
        )
    last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    sys.stderr.write(f"\n[fhir-validator] {len(files)} files in {time.monotonic() - started:.0f} s: {' '.join(last)}\n")
    missing = [f for f in files if f not in out]
    if missing:
        raise ValidatorUnavailable(f"validate.sh reported nothing for {len(missing)} files, e.g. {missing[0]}")
    return out


def shared_inputs() -> list[Path]:
    """Every shared input folder: HL7 v2 feeds, DICOM SR sets, the field reports."""
    folders = [*sorted(TESTDATA.glob("hl7v2-*")), *sorted(TESTDATA.glob("dicom-sr-*")), TESTDATA / "field-reports"]
    return [f for f in folders if f.is_dir()]


def map_shared_inputs(out_root: Path) -> dict[str, Any]:
    """``engine map --model document`` over each shared input folder into ``out_root/<folder>/`` (a folder per
    input set, so a failing Bundle names its source); the summaries by folder."""
    summaries: dict[str, Any] = {}
    for folder in shared_inputs():
        out = out_root / folder.name
        proc = subprocess.run(
            [sys.executable, "-m", "engine", "map", "--model", "document", "--quiet", "--out", str(out), str(folder)],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
        )  # fmt: skip
        if proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
            raise AssertionError(f"engine map {folder.name} exited {proc.returncode}: {proc.stderr[-2000:]}")
        summaries[folder.name] = json.loads((out / "summary.json").read_text())
    return summaries


def bundle_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.json") if p.name != "summary.json" and p.parent.name != "rejected")


@dataclass
class Group:
    """The Bundle files of one producer (or why the producer failed)."""

    files: list[Path] = field(default_factory=list)
    error: str | None = None  # the producer failed


class OfficialValidation:
    """The session's validator run: every group's files, validated in one JVM."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.groups: dict[str, Group] = {}
        self.reports: dict[Path, FileReport] = {}
        self.summaries: dict[str, Any] = {}
        self._runs = 0

    def run(self) -> OfficialValidation:
        shared = self.root / SHARED_GROUP
        self.summaries = map_shared_inputs(shared)
        self.groups[SHARED_GROUP] = Group(bundle_files(shared))
        for name, producer in sorted(_PRODUCERS.items()):
            out = self.root / "registered" / name
            out.mkdir(parents=True, exist_ok=True)
            try:
                producer(out)
            except Exception as exc:  # reported by the group, the other groups are still validated
                self.groups[name] = Group(error=f"{type(exc).__name__}: {exc}")
                continue
            self.groups[name] = Group(bundle_files(out))
        everything = [f for g in self.groups.values() for f in g.files]
        self.reports = run_validator(everything, self.root / f"report-{self._runs}.json")
        self._runs += 1
        return self

    def group(self, name: str) -> dict[Path, FileReport]:
        """The reports of one group's files (the shared inputs: ``"shared-testdata"``)."""
        found = self.groups.get(name)
        if found is None:
            raise KeyError(f"no validator group {name!r}: register() it at import time")
        if found.error:
            raise AssertionError(f"producer of validator group {name!r} failed: {found.error}")
        return {f: self.reports[f.resolve()] for f in found.files}

    def validate(self, paths: Iterable[Path]) -> dict[Path, FileReport]:
        """``official_validate(paths)``: reports for ``paths``, from the session run when it covered them, else
        from one more JVM run over the rest."""
        wanted = [Path(p).resolve() for p in paths]
        todo = [p for p in wanted if p not in self.reports]
        if todo:
            self.reports.update(run_validator(todo, self.root / f"report-{self._runs}.json"))
            self._runs += 1
        return {p: self.reports[p] for p in wanted}

    @staticmethod
    def errors_in(reports: dict[Path, FileReport]) -> int:
        return sum(len(r.errors) for r in reports.values())

    def describe(self, reports: dict[Path, FileReport], cap: int = 40) -> str:
        """The unwaived errors: counts by message kind, then ``folder/file: path: message`` lines (capped)."""
        kinds: Counter[str] = Counter()
        files_by_kind: dict[str, set[Path]] = {}
        lines: list[str] = []
        for path in sorted(reports):
            for err in reports[path].errors:
                kind = _kind(err.get("message", ""))
                kinds[kind] += 1
                files_by_kind.setdefault(kind, set()).add(path)
                if len(lines) < cap:
                    lines.append(f"  {self._short(path)}: {err.get('path', '')}: {err.get('message', '')[:300]}")
        total = sum(kinds.values())
        bad = sum(1 for r in reports.values() if r.errors)
        head = [f"{total} unwaived errors in {bad} of {len(reports)} files; by kind (errors / files):"]
        head += [f"  {n} / {len(files_by_kind[k])}  {k}" for k, n in kinds.most_common(20)]
        if len(kinds) > 20:
            head.append(f"  ... {len(kinds) - 20} more kinds")
        more = f"\n  ... {total - len(lines)} more" if total > len(lines) else ""
        return "\n".join([*head, "first errors:", *lines]) + more

    def _short(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def _kind(message: str) -> str:
    """An error message without its instance-specific parts (resource ids, entry numbers), for grouping; quoted
    codes and values stay (``Unknown code 'MRN'`` and ``'EE'`` are two kinds)."""
    kind = re.sub(r"urn:uuid:[0-9a-fA-F-]+", "urn:uuid:…", message)
    return re.sub(r"\[\d+\]", "[n]", kind)[:160]


def session_validation(root: Path) -> OfficialValidation:
    """Build and run the session's validation (the ``official_validation`` fixture)."""
    require_validator()
    try:
        return OfficialValidation(root).run()
    except ValidatorUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"official FHIR validator failed under CI: {exc}", pytrace=False)
        pytest.skip(f"official FHIR validator unavailable: {exc}")
