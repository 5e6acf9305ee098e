"""Schemathesis against the management API's OpenAPI document (ASGI app over a real, filled store).

Every operation is called with generated parameters (valid and invalid) under the ``doc`` user (roles
operator + phi) and every response is checked against the document: no 5xx, declared status codes,
content types, headers and response schemas. Examples are few, so this stays well under a minute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.console.conftest import DEAD_ORU, GOOD_ORU, Deployment

#: examples per operation and generation mode (CONSOLE_FUZZ_EXAMPLES=200 for a longer local run)
EXAMPLES = int(os.environ.get("CONSOLE_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(Path(tmp_path_factory.mktemp("schemathesis")))
    dep.land(GOOD_ORU)
    dep.land(DEAD_ORU, source="inbox")
    dep.process()
    yield dep
    dep.store.close()


def test_api_conforms_to_its_openapi_document(deployment: Deployment) -> None:
    # The schemathesis pytest plugin (``schema.parametrize``) does not run under pytest 9, so the operations
    # are driven through schemathesis' Python API: one Hypothesis run per operation and generation mode.
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", deployment.app())
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = sorted(op.label for op in operations)
    assert "GET /api/v1/messages" in labels and "POST /api/v1/messages/{message_id}/reprocess" in labels
    calls: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: schemathesis.Case) -> None:
                response = case.call_and_validate(headers={"Authorization": "Bearer doc-token"})
                calls.append(f"{case.operation.label} {response.status_code}")

            check()
    assert len(calls) > 2 * len(operations)
    assert not [c for c in calls if c.endswith((" 500", " 502", " 503"))]
