"""Property-based fuzz of the API from its own OpenAPI description: no 5xx, every reply as documented."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.conftest import SERVICE, make_app, workflow

# Small enough for the whole fuzz to stay well under two minutes on two cores; raise it locally to dig.
MAX_EXAMPLES = int(os.environ.get("MACHINERY_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

app = make_app(MAX_BODY_BYTES=64 * 1024)
_client = app.test_client()
# Something for the fuzz to find: a service (whose calls fail at once, not retried), a workflow, an event.
_client.post("/services", json={**SERVICE, "timeout_s": 0.5, "retry": {"max_attempts": 1, "backoff_s": 0}})
_client.post("/workflows", json=workflow("w"))
_client.post("/e/w?mode=async", json={"message": "seed"})

schema = schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def _close_app():
    yield
    app.extensions["machinery"].close(grace_s=2)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_api_answers_every_request_as_its_description_says(case):
    case.call_and_validate(checks=CHECKS)


keyed_app = make_app(API_KEYS="fuzz-admin-key-0123456789:admin")
strangers = schemathesis.openapi.from_wsgi("/openapi.json", keyed_app)


@pytest.fixture(scope="module", autouse=True)
def _close_keyed_app():
    yield
    keyed_app.extensions["machinery"].close(grace_s=2)


@strangers.parametrize()
@settings(max_examples=max(5, MAX_EXAMPLES // 3), deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_a_caller_without_a_key_gets_nothing_but_documented_errors(case):
    response = case.call_and_validate(checks=CHECKS)
    if not case.path.startswith("/callbacks/"):
        assert response.status_code in (401, 404, 405), response.text[:200]
