"""Sync events over real HTTP: the README example, validation, and every way a service can fail."""

from __future__ import annotations

import time

import pytest

from tests.conftest import EXAMPLE_RESULT, EXAMPLE_TEXT, definition
from tests.e2e.conftest import one_step_workflow, register_examples_over_http
from tests.support.processes import gunicorn_api

pytestmark = pytest.mark.e2e


@pytest.fixture
def examples(http, api, example_services):
    register_examples_over_http(http, api, example_services)


def test_the_readme_example_runs_to_its_result(http, api, examples):
    response = http.post(f"{api}/e/process-text", json=definition("event-text"), timeout=30)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "completed" and body["outputs"] == EXAMPLE_RESULT
    assert response.headers["Location"] == f"/events/{body['event_id']}"
    record = http.get(f"{api}/events/{body['event_id']}", timeout=10).json()
    assert [step["service"] for step in record["steps"]] == ["upper", "reverse", "space-counter"]
    assert all(step["status"] == "completed" and step["duration_ms"] > 0 for step in record["steps"])
    assert record["steps"][0]["inputs"] == {"message": EXAMPLE_TEXT}
    assert record["steps"][2]["outputs"] == {"message": 7}
    assert record["plan"]["steps"][2]["outputs"] == {"message": "space_count"}


def test_the_workflow_is_found_by_id_too(http, api, examples):
    workflow_id = http.get(f"{api}/workflows/process-text", timeout=10).json()["workflow_id"]
    response = http.post(f"{api}/e/{workflow_id}", json={"data": {"message": "a b"}}, timeout=30)
    assert response.status_code == 201 and response.json()["outputs"] == {"message": "B A", "space_count": 1}


def test_a_bare_webhook_body_is_taken_as_the_data(http, api, examples):
    response = http.post(f"{api}/e/process-text", json={"message": "x y z", "sender": "hook"}, timeout=30)
    assert response.status_code == 201 and response.json()["outputs"]["space_count"] == 2


@pytest.mark.parametrize("body, fields", [
    ({"data": {}}, {"message": "missing (expected string)"}),
    ({"data": {"message": 3}}, {"message": "expected string, got int"}),
    ({"msg": "typo"}, {"message": "missing (expected string)"}),
])
def test_data_that_does_not_match_the_inputs_is_422_naming_each_field(http, api, examples, body, fields):
    response = http.post(f"{api}/e/process-text", json=body, timeout=10)
    assert response.status_code == 422 and response.json()["errors"] == fields
    assert "message" in response.json()["message"]
    assert http.get(f"{api}/events", timeout=10).json()["total"] == 0


def test_a_body_that_is_not_an_object_is_422(http, api, examples):
    response = http.post(f"{api}/e/process-text", json=["a"], timeout=10)
    assert response.status_code == 422
    assert response.json()["message"] == "event data must be a JSON object, got array"


def test_an_unknown_workflow_is_404(http, api):
    response = http.post(f"{api}/e/nope", json={"message": "x"}, timeout=10)
    assert response.status_code == 404 and response.json()["message"] == "no workflow 'nope'"


def test_events_are_listed_by_workflow_and_status(http, api, examples, faulty):
    url, _ = faulty
    one_step_workflow(http, api, "broken", f"{url}/bad-request")
    for text in ("a", "b"):
        http.post(f"{api}/e/process-text", json={"message": text}, timeout=30)
    http.post(f"{api}/e/broken", json={"message": "c"}, timeout=30)
    completed = http.get(f"{api}/events", params={"workflow": "process-text", "status": "completed"}, timeout=10)
    assert completed.json()["total"] == 2
    failed = http.get(f"{api}/events", params={"status": "failed"}, timeout=10).json()
    assert failed["total"] == 1 and failed["items"][0]["workflow"] == "broken"
    assert http.get(f"{api}/events", params={"status": "odd"}, timeout=10).status_code == 422
    assert http.get(f"{api}/events", params={"workflow": "ghost"}, timeout=10).status_code == 404


def test_a_service_failing_once_is_retried_and_the_event_completes(http, api, faulty):
    url, app = faulty
    one_step_workflow(http, api, "flaky", f"{url}/flaky", retry={"max_attempts": 3, "backoff_s": 0.01})
    response = http.post(f"{api}/e/flaky", json={"message": "hi"}, timeout=30)
    assert response.status_code == 201 and response.json()["outputs"] == {"message": "HI"}
    step = http.get(f"{api}/events/{response.json()['event_id']}", timeout=10).json()["steps"][0]
    assert step["attempts"] == 2 and [a["status"] for a in step["attempt_log"]] == [500, 200]
    # The retry carried the same idempotency key, so the service could dedupe it.
    assert list(app.config["calls"].values()) == [2]


def test_a_service_always_failing_gives_502_with_the_step_and_error(http, api, faulty):
    url, app = faulty
    one_step_workflow(http, api, "down", f"{url}/always-500", retry={"max_attempts": 3, "backoff_s": 0.01})
    response = http.post(f"{api}/e/down", json={"message": "hi"}, timeout=30)
    assert response.status_code == 502
    body = response.json()
    assert body["status"] == "failed" and body["error"]["step"] == 0 and body["error"]["service"] == "down"
    assert body["error"]["status"] == 500 and "after 3 attempts" in body["error"]["message"]
    record = http.get(f"{api}/events/{body['event_id']}", timeout=10).json()
    assert record["steps"][0]["attempts"] == 3 and sum(app.config["calls"].values()) == 3


def test_a_service_that_hangs_fails_within_its_timeout(http, api, faulty):
    url, _ = faulty
    one_step_workflow(http, api, "slow", f"{url}/hang?s=3", timeout_s=0.3, retry={"max_attempts": 2, "backoff_s": 0})
    started = time.monotonic()
    response = http.post(f"{api}/e/slow", json={"message": "hi"}, timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 502 and response.json()["error"]["kind"] == "timeout"
    assert elapsed < 2.5  # two attempts of 0.3 s, far from the 3 s the service would take
    assert http.get(f"{api}/events/{response.json()['event_id']}", timeout=10).json()["steps"][0]["attempts"] == 2


def test_a_service_replying_non_json_is_a_contract_failure_not_retried(http, api, faulty):
    url, app = faulty
    one_step_workflow(http, api, "html", f"{url}/not-json")
    response = http.post(f"{api}/e/html", json={"message": "hi"}, timeout=30)
    assert response.status_code == 502
    assert response.json()["error"]["kind"] == "contract" and "not a JSON object" in response.json()["error"]["message"]
    assert sum(app.config["calls"].values()) == 1


def test_a_service_closing_the_connection_is_retried_then_fails(http, api, hang_up):
    one_step_workflow(http, api, "rude", hang_up, retry={"max_attempts": 2, "backoff_s": 0})
    response = http.post(f"{api}/e/rude", json={"message": "hi"}, timeout=30)
    assert response.status_code == 502 and response.json()["error"]["kind"] == "connection"
    step = http.get(f"{api}/events/{response.json()['event_id']}", timeout=10).json()["steps"][0]
    assert step["attempts"] == 2 and step["status"] == "failed"


def test_a_4xx_from_a_service_fails_at_once(http, api, faulty):
    url, app = faulty
    one_step_workflow(http, api, "picky", f"{url}/bad-request")
    response = http.post(f"{api}/e/picky", json={"message": "hi"}, timeout=30)
    assert response.status_code == 502 and response.json()["error"]["status"] == 400
    assert sum(app.config["calls"].values()) == 1


def test_a_service_that_is_not_listening_fails_with_a_connection_error(http, api):
    from machinery.serving import free_port

    one_step_workflow(http, api, "absent", f"http://127.0.0.1:{free_port()}/", retry={"max_attempts": 1})
    response = http.post(f"{api}/e/absent", json={"message": "hi"}, timeout=30)
    assert response.status_code == 502 and "Connection refused" in response.json()["error"]["message"]


def test_under_gunicorn_the_example_runs_end_to_end(http, example_services):
    with gunicorn_api({"MACHINERY_MONGO_URI": "mongomock://localhost/gunicorn"}) as api:
        register_examples_over_http(http, api, example_services)
        response = http.post(f"{api}/e/process-text", json=definition("event-text"), timeout=30)
        assert response.status_code == 201 and response.json()["outputs"] == EXAMPLE_RESULT
        event = http.get(f"{api}{response.headers['Location']}", timeout=10).json()
        assert len(event["steps"]) == 3 and event["status"] == "completed"
