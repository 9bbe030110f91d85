"""Async events, service callbacks, retries and replays, idempotency and completion webhooks, over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import EXAMPLE_RESULT, definition
from tests.e2e.conftest import one_step_workflow, register_examples_over_http
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def config(config):
    return {**config, "EMBEDDED_WORKERS": 2, "WEBHOOK_SECRET": "s3cret"}


@pytest.fixture
def examples(http, api, example_services):
    register_examples_over_http(http, api, example_services)


def finished(http, api, event_id):
    def check():
        event = http.get(f"{api}/events/{event_id}", timeout=10).json()
        return event if event["status"] in ("completed", "failed") else None
    return wait_until(check, 20, message=f"event {event_id} finished")


@pytest.mark.parametrize("how", [{"params": {"mode": "async"}}, {"headers": {"Prefer": "respond-async"}}])
def test_an_async_event_is_accepted_at_once_and_completed_by_a_worker(http, api, examples, how):
    response = http.post(f"{api}/e/process-text", json=definition("event-text"), timeout=10, **how)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["outputs"] is None
    assert response.headers["Location"] == f"/events/{body['event_id']}"
    event = finished(http, api, body["event_id"])
    assert event["status"] == "completed" and event["outputs"] == EXAMPLE_RESULT


def test_an_unknown_mode_is_422(http, api, examples):
    assert http.post(f"{api}/e/process-text?mode=later", json={"message": "x"}, timeout=10).status_code == 422


def test_an_async_service_completes_its_step_by_callback(http, api, examples):
    response = http.post(f"{api}/e/shout-async", json={"message": "called back"}, timeout=10)
    assert response.status_code == 202 and response.json()["status"] == "waiting"
    event = finished(http, api, response.json()["event_id"])
    assert event["status"] == "completed" and event["outputs"] == {"message": "KCAB DELLAC"}
    assert [step["service"] for step in event["steps"]] == ["slow-upper", "reverse"]
    assert event["steps"][0]["outputs"] == {"message": "CALLED BACK"} and event["steps"][0]["duration_ms"] >= 150


@pytest.fixture
def parked(http, api, faulty):
    """An event waiting on a test service that answers 202 and hands its callback URL to the test."""
    url, app = faulty
    one_step_workflow(http, api, "parked", f"{url}/async", callback_timeout_s=30)
    response = http.post(f"{api}/e/parked", json={"message": "later"}, timeout=10)
    assert response.status_code == 202
    return response.json()["event_id"], app.config["callbacks"][-1]


def test_a_callback_completes_once_and_a_replay_changes_nothing(http, api, parked):
    event_id, callback = parked
    assert callback.startswith(f"{api}/callbacks/")
    first = http.post(callback, json={"message": "DONE"}, timeout=10)
    assert first.status_code == 200 and first.json()["status"] == "completed"
    before = http.get(f"{api}/events/{event_id}", timeout=10).json()
    second = http.post(callback, json={"message": "AGAIN"}, timeout=10)
    assert second.status_code == 410 and "already used" in second.json()["message"]
    after = http.get(f"{api}/events/{event_id}", timeout=10).json()
    assert after == before and after["outputs"] == {"message": "DONE"} and len(after["steps"]) == 1


def test_a_callback_with_wrong_outputs_is_422_and_the_step_keeps_waiting(http, api, parked):
    event_id, callback = parked
    bad = http.post(callback, json={"message": 5}, timeout=10)
    assert bad.status_code == 422 and bad.json()["errors"] == {"message": "expected string, got int"}
    assert http.get(f"{api}/events/{event_id}", timeout=10).json()["status"] == "waiting"
    assert http.post(callback, json={"message": "OK"}, timeout=10).status_code == 200


def test_an_unknown_callback_token_is_404(http, api):
    assert http.post(f"{api}/callbacks/nothing-here", json={}, timeout=10).status_code == 404
    assert http.post(f"{api}/callbacks/6b08b8b8c0a1e7920e84c1fb.abc", json={}, timeout=10).status_code == 404


def test_a_callback_that_never_comes_fails_the_step_at_its_deadline(http, api, faulty):
    url, app = faulty
    one_step_workflow(http, api, "forgotten", f"{url}/async", callback_timeout_s=0.3)
    response = http.post(f"{api}/e/forgotten", json={"message": "x"}, timeout=10)
    event = finished(http, api, response.json()["event_id"])
    assert event["status"] == "failed" and event["error"]["kind"] == "callback_timeout"
    assert event["steps"][0]["status"] == "failed" and "waiting" not in event
    late = http.post(app.config["callbacks"][-1], json={"message": "LATE"}, timeout=10)
    assert late.status_code in (404, 410)
    assert http.get(f"{api}/events/{event['event_id']}", timeout=10).json()["status"] == "failed"


def test_a_failed_event_is_retried_from_its_failed_step(http, api, example_services, faulty):
    url, app = faulty
    service = {"name": "gate", "address": f"{url}/toggle", "retry": {"max_attempts": 1},
               "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}]}
    http.post(f"{api}/services", json=service, timeout=10)
    register_examples_over_http(http, api, example_services)
    http.post(f"{api}/workflows", json={"name": "gated", "services": ["upper", "gate", "reverse"],
                                        "inputs": [{"name": "message", "type": "string"}],
                                        "outputs": [{"name": "message", "type": "string"}]}, timeout=10)
    failed = http.post(f"{api}/e/gated", json={"message": "ab"}, timeout=30)
    assert failed.status_code == 502 and failed.json()["error"]["step"] == 1
    event_id = failed.json()["event_id"]
    app.config["broken"] = False
    retried = http.post(f"{api}/events/{event_id}/retry", timeout=30)
    assert retried.status_code == 200 and retried.json()["outputs"] == {"message": "BA"}
    record = http.get(f"{api}/events/{event_id}", timeout=10).json()
    # The record keeps the failed attempt; the completed first step was not called again.
    assert [(s["step"], s["run"], s["status"]) for s in record["steps"]] == [
        (0, 0, "completed"), (1, 0, "failed"), (1, 1, "completed"), (2, 1, "completed")]
    assert record["runs"][0]["from_step"] == 1 and record["runs"][0]["previous_status"] == "failed"
    again = http.post(f"{api}/events/{event_id}/retry", timeout=10)
    assert again.status_code == 409 and "only a failed event" in again.json()["message"]


def test_a_finished_event_is_replayed_from_any_step_with_edited_values(http, api, examples):
    first = http.post(f"{api}/e/process-text", json={"message": "one two"}, timeout=30).json()
    replay = http.post(f"{api}/events/{first['event_id']}/retry",
                       json={"from_step": 1, "context": {"message": "X Y Z"}}, timeout=30)
    assert replay.status_code == 200 and replay.json()["outputs"] == {"message": "Z Y X", "space_count": 2}
    record = http.get(f"{api}/events/{first['event_id']}", timeout=10).json()
    assert len(record["steps"]) == 5 and record["run"] == 1
    assert record["runs"][0]["overrides"] == {"message": "X Y Z"}
    # Replaying from the last step starts from the context the replay left before it.
    last = http.post(f"{api}/events/{first['event_id']}/retry", json={"from_step": 2}, timeout=30)
    assert last.json()["outputs"] == {"message": "Z Y X", "space_count": 2}


@pytest.mark.parametrize("body, status, words", [
    ({"from_step": 1, "context": {"message": 3}}, 422, "expected string, got int"),
    ({"from_step": 1, "context": {"nope": "x"}}, 422, "not a context key"),
    ({"from_step": 9}, 422, "from_step must be between 0 and 2"),
    ({"from_step": -1}, 422, "from_step"),
    ({"from_step": "one"}, 422, "from_step"),
])
def test_a_bad_replay_is_refused_and_changes_nothing(http, api, examples, body, status, words):
    first = http.post(f"{api}/e/process-text", json={"message": "a b"}, timeout=30).json()
    before = http.get(f"{api}/events/{first['event_id']}", timeout=10).json()
    response = http.post(f"{api}/events/{first['event_id']}/retry", json=body, timeout=10)
    assert response.status_code == status and words in response.json()["message"]
    assert http.get(f"{api}/events/{first['event_id']}", timeout=10).json() == before


def test_an_async_retry_is_queued_for_a_worker(http, api, examples):
    first = http.post(f"{api}/e/process-text", json={"message": "a b"}, timeout=30).json()
    response = http.post(f"{api}/events/{first['event_id']}/retry?mode=async", json={"from_step": 0}, timeout=10)
    assert response.status_code == 202 and response.json()["status"] == "pending"
    assert finished(http, api, first["event_id"])["run"] == 1


def test_fifty_concurrent_posts_with_one_idempotency_key_make_one_event(http, api, examples):
    barrier = threading.Barrier(50)

    def send(_):
        barrier.wait(timeout=10)
        return requests.post(f"{api}/e/process-text", json={"message": "once"},
                             headers={"Idempotency-Key": "order-42"}, timeout=30)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(send, range(50)))
    assert sorted({r.status_code for r in responses}) in ([200, 201], [201])
    assert [r.status_code for r in responses].count(201) == 1
    assert len({r.json()["event_id"] for r in responses}) == 1
    assert http.get(f"{api}/events", timeout=10).json()["total"] == 1


def test_an_idempotency_key_in_the_envelope_returns_the_first_event(http, api, examples):
    body = {"data": {"message": "a"}, "idempotency_key": "k1"}
    first = http.post(f"{api}/e/process-text", json=body, timeout=30)
    again = http.post(f"{api}/e/process-text", json=body, timeout=30)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["event_id"] == first.json()["event_id"] and again.json()["status"] == "completed"
    clash = http.post(f"{api}/e/process-text", json=body, headers={"Idempotency-Key": "k2"}, timeout=10)
    assert clash.status_code == 422


def test_a_completion_webhook_is_signed_and_recorded(http, api, examples, receiver):
    hook, app = receiver
    response = http.post(f"{api}/e/process-text", json={"data": {"message": "a b"}, "callback_url": hook}, timeout=30)
    event_id = response.json()["event_id"]
    delivered = wait_until(lambda: app.config["received"], 15, message="webhook delivered")
    body, headers = delivered[0]["body"], delivered[0]["headers"]
    assert json.loads(body)["event_id"] == event_id and json.loads(body)["status"] == "completed"
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Machinery-Signature"], expected)
    record = wait_until(lambda: (e := http.get(f"{api}/events/{event_id}", timeout=10).json())["webhook"]["status"]
                        == "delivered" and e, 10, message="delivery recorded")
    assert record["webhook"]["attempts"][0]["status"] == 200


def test_a_failing_webhook_is_retried_with_each_attempt_recorded(http, api, examples, receiver):
    hook, app = receiver
    app.config["status"] = 500
    response = http.post(f"{api}/e/process-text", json={"data": {"message": "a"}, "callback_url": hook}, timeout=30)
    wait_until(lambda: len(app.config["received"]) >= 2, 20, message="a second delivery attempt")
    app.config["status"] = 200
    record = wait_until(
        lambda: (e := http.get(f"{api}/events/{response.json()['event_id']}", timeout=10).json())["webhook"]["status"]
        == "delivered" and e, 30, message="delivered after retries")
    statuses = [attempt["status"] for attempt in record["webhook"]["attempts"]]
    assert statuses[0] == 500 and statuses[-1] == 200


def test_a_bad_callback_url_is_422(http, api, examples):
    response = http.post(f"{api}/e/process-text", json={"data": {"message": "a"}, "callback_url": "ftp://x"},
                         timeout=10)
    assert response.status_code == 422 and "callback_url" in response.json()["message"]


NESTED_OUTPUTS = [{"name": "total", "type": "float", "from": "body.order.total"},
                  {"name": "skus", "type": {"type": "array", "items": "string"}, "from": "body.order.lines[*].sku"},
                  {"name": "count", "type": "int", "from": "length(body.order.lines)"},
                  {"name": "trace", "type": "string", "from": "headers.\"x-trace\""},
                  {"name": "note", "type": "string", "from": "body.note"}]
CALLBACK_SECRET = "callback-secret-Wq81"


@pytest.fixture
def nested_async(http, api, faulty):
    """A version 2 service answering 202, whose outputs are read `from` a nested reply, with a secret header."""
    url, app = faulty
    assert http.put(f"{api}/secrets/cb_token", json={"value": CALLBACK_SECRET}, timeout=10).status_code == 201
    service = {"name": "nested-async", "address": f"{url}/async", "callback_timeout_s": 30,
               "inputs": [{"name": "order_id", "type": "string"}], "outputs": NESTED_OUTPUTS,
               "request": {"method": "POST", "headers": {"Authorization": "Bearer {secret.cb_token}"}}}
    assert http.post(f"{api}/services", json=service, timeout=10).status_code == 201
    return app


NESTED_REPLY = {"order": {"total": 12.5, "lines": [{"sku": "a-1"}, {"sku": "b-2"}]},
                "note": f"signed with {CALLBACK_SECRET}"}
NESTED_EXPECTED = {"total": 12.5, "skus": ["a-1", "b-2"], "count": 2, "trace": "t-77", "note": "signed with ***"}


@pytest.mark.parametrize("shape", ["v1", "tree"])
def test_a_callback_is_read_through_from_as_its_reply_would_be(http, api, nested_async, shape):
    """The callback's body is nested JSON and its headers are readable, exactly as a direct reply's; a
    secret the service was sent and echoes back is masked in what is kept; a body on which an
    expression cannot be evaluated is a 422 naming the output, and the step keeps waiting."""
    inputs = [{"name": "order_id", "type": "string"}]
    outputs = [{"name": name, "type": field["type"]} for name, field in
               ((field["name"], field) for field in NESTED_OUTPUTS)]
    if shape == "v1":
        workflow = {"name": "nested-cb", "services": ["nested-async"], "inputs": inputs, "outputs": outputs}
    else:
        workflow = {"name": "nested-cb", "inputs": inputs, "outputs": outputs,
                    "steps": [{"id": "fetch", "call": "nested-async", "in": {"order_id": "order_id"}}]}
    assert http.post(f"{api}/workflows", json=workflow, timeout=10).status_code == 201
    response = http.post(f"{api}/e/nested-cb", json={"order_id": "o-1"}, timeout=10)
    assert response.status_code == 202, response.text
    event_id = response.json()["event_id"]
    callback = wait_until(lambda: nested_async.config["callbacks"] and nested_async.config["callbacks"][-1], 10,
                          message="the service was called")

    unreadable = http.post(callback, json={"order": {"total": 1.0, "lines": None}}, timeout=10,
                           headers={"X-Trace": "t-77"})
    assert unreadable.status_code == 422
    problem = unreadable.json()["errors"]["count"]
    assert "`from` cannot be read from this reply" in (problem if isinstance(problem, str) else problem[0])
    wrong = http.post(callback, json={"order": {"total": "twelve", "lines": []}, "note": "x"}, timeout=10,
                      headers={"X-Trace": "t-77"})
    assert wrong.status_code == 422 and "total" in wrong.json()["errors"]
    assert http.get(f"{api}/events/{event_id}", timeout=10).json()["status"] == "waiting"

    done = http.post(callback, json=NESTED_REPLY, headers={"X-Trace": "t-77"}, timeout=10)
    assert done.status_code == 200, done.text
    event = finished(http, api, event_id)
    assert event["status"] == "completed" and event["outputs"] == NESTED_EXPECTED
    everything = json.dumps(event) + http.get(f"{api}/events/{event_id}/steps", timeout=10).text
    assert CALLBACK_SECRET not in everything


def test_a_callback_to_a_from_service_may_be_any_json(http, api, faulty):
    """A service whose outputs are read `from` the body may be called back with an array."""
    url, app = faulty
    service = {"name": "first-of", "address": f"{url}/async", "callback_timeout_s": 30,
               "inputs": [{"name": "message", "type": "string"}],
               "outputs": [{"name": "message", "type": "string", "from": "body[0].text"}]}
    assert http.post(f"{api}/services", json=service, timeout=10).status_code == 201
    workflow = {"name": "first-of", "services": ["first-of"], "inputs": [{"name": "message", "type": "string"}],
                "outputs": [{"name": "message", "type": "string"}]}
    assert http.post(f"{api}/workflows", json=workflow, timeout=10).status_code == 201
    event_id = http.post(f"{api}/e/first-of", json={"message": "m"}, timeout=10).json()["event_id"]
    callback = wait_until(lambda: app.config["callbacks"] and app.config["callbacks"][-1], 10,
                          message="the service was called")
    assert http.post(callback, json=[{"text": "from an array"}], timeout=10).status_code == 200
    assert finished(http, api, event_id)["outputs"] == {"message": "from an array"}
