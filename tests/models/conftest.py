"""The harmonized/IMR server tests use the session's one real HAPI FHIR R5 server (fixture ``hapi`` in
tests/conftest.py; ``FHIR_TEST_BASE_URL`` or ``HAPI_FHIR_BASE_URL`` reuses an already running server), emptied with
``$expunge`` before every test that uses it. Unavailable: skip locally, fail under CI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

_EXPUNGE = {"resourceType": "Parameters", "parameter": [{"name": "expungeEverything", "valueBoolean": True}]}
FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="session")
def hapi_base(hapi: Any) -> str:
    return str(hapi.url)


@pytest.fixture
def fhir(hapi_base: str) -> Iterator[Any]:
    """An httpx client on the empty server."""
    import httpx

    with httpx.Client(base_url=hapi_base, timeout=120, headers={"Accept": FHIR_JSON}) as client:
        r = client.post("/$expunge", json=_EXPUNGE, headers={"Content-Type": FHIR_JSON})
        assert r.status_code == 200, r.text
        yield client
