"""Shared fixtures: the shared/ folder, the offline FHIR profile checker, a converter with the shipped
sender profiles."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def fhir_validator() -> Any:
    """profcheck.Validator over ../shared/fhir-packages. In CI a missing checker fails instead of skipping."""
    sys.path.insert(0, str(SHARED / "tools"))
    if os.environ.get("CI"):
        import profcheck  # type: ignore[import-not-found]
    else:
        profcheck = pytest.importorskip("profcheck")
    if not (SHARED / "fhir-packages").is_dir():
        if os.environ.get("CI"):
            pytest.fail("../shared/fhir-packages not present")
        pytest.skip("../shared/fhir-packages not present")
    return profcheck.Validator()


def profile_errors(validator: Any, resource: dict[str, Any]) -> list[str]:
    return [str(i) for i in validator.validate(resource) if i.sev == "error"]


@pytest.fixture(scope="session")
def kafka_broker_instance() -> Iterator[Any]:
    """One real Kafka broker for the whole session (tests/kafka_broker.py: Apache Kafka KRaft from Maven
    Central jars, Tansu with ENGINE_TEST_BROKER=tansu, or KAFKA_BOOTSTRAP). Unavailable: skip locally,
    fail when CI=true."""
    from tests import kafka_broker

    t0 = time.monotonic()
    try:
        ctx = kafka_broker.running_broker()
        broker = ctx.__enter__()
    except kafka_broker.BrokerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Kafka broker unavailable under CI: {exc}", pytrace=False)
        pytest.skip(f"Kafka broker unavailable: {exc}")
    sys.stderr.write(
        f"\n[kafka] {broker.kind} broker at {broker.bootstrap} ready in {time.monotonic() - t0:.1f}s {broker.timings}\n"
    )
    try:
        yield broker
    finally:
        ctx.__exit__(None, None, None)


@pytest.fixture(scope="session")
def bootstrap(kafka_broker_instance: Any) -> str:
    return str(kafka_broker_instance.bootstrap)


@pytest.fixture(scope="session")
def converter() -> Any:
    from engine.cmd_map import load_mapping_context
    from engine.convert import Converter

    return Converter(load_mapping_context(None))


@pytest.fixture(scope="session")
def official_validation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One run of the official HL7 FHIR validator (one JVM) over the Bundles of every shared input and of every
    producer registered with ``tests.conformance.official.register``. Skips locally, fails under CI=true, when
    the validator cannot run. See tests/conformance/official.py."""
    from tests.conformance.official import session_validation

    return session_validation(tmp_path_factory.mktemp("official-validator"))


@pytest.fixture(scope="session")
def official_validate(official_validation: Any) -> Any:
    """``official_validate(paths) -> {path: FileReport}``: from the session's run, else one more JVM run."""
    return official_validation.validate


@pytest.fixture(scope="session")
def hapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's one real HAPI FHIR R5 server (tests/fhir_server.py), shared by tests/publish and tests/models.
    Skips locally, fails under CI=true, when it cannot start."""
    from tests.fhir_server import session_server

    yield from session_server(tmp_path_factory.mktemp("hapi") / "hapi.log")
