"""Services as any HTTP endpoint, end to end against httpbin: a REST server not written for Machinery,
served for real on a free 127.0.0.1 port, chained with the example services, sync and async."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import register_examples_over_http
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def config(config):
    return {**config, "EMBEDDED_WORKERS": 2}


def register(http, api, service):
    response = http.post(f"{api}/services", json=service, timeout=10)
    assert response.status_code in (200, 201), response.json()
    return response.json()


def one_step(http, api, service, inputs, outputs):
    register(http, api, service)
    workflow = {"name": service["name"], "services": [service["name"]], "inputs": inputs, "outputs": outputs}
    response = http.post(f"{api}/workflows", json=workflow, timeout=10)
    assert response.status_code in (200, 201), response.json()


def finished(http, api, event_id):
    def check():
        event = http.get(f"{api}/events/{event_id}", timeout=10).json()
        return event if event["status"] in ("completed", "failed") else None
    return wait_until(check, 20, message=f"event {event_id} finished")


ANYTHING_INPUTS = [{"name": "id", "type": "string"}, {"name": "x", "type": "string"},
                   {"name": "tags", "type": "array"}]


def test_get_with_a_path_parameter_and_repeated_query_parameters(http, api, httpbin):
    one_step(http, api, {
        "name": "anything", "address": httpbin,
        "inputs": ANYTHING_INPUTS,
        "outputs": [{"name": "url", "type": "string", "from": "body.url"},
                    {"name": "args", "type": "object", "from": "body.args"},
                    {"name": "method", "type": "string", "from": "body.method"}],
        "request": {"method": "GET", "path": "/anything/{id}", "query": {"x": "x", "tag": "tags"}},
    }, inputs=ANYTHING_INPUTS, outputs=[{"name": "url", "type": "string"}, {"name": "args", "type": "object"},
                                        {"name": "method", "type": "string"}])
    response = http.post(f"{api}/e/anything", json={"id": "order 7/a", "x": "1&2", "tags": ["a", "b"]}, timeout=30)
    assert response.status_code == 201, response.json()
    outputs = response.json()["outputs"]
    assert outputs["method"] == "GET"
    assert outputs["args"] == {"x": "1&2", "tag": ["a", "b"]}
    step = http.get(f"{api}/events/{response.json()['event_id']}", timeout=10).json()["steps"][0]
    assert step["request"] == {"method": "GET", "headers": {},
                               "url": f"{httpbin}/anything/order%207%2Fa?x=1%262&tag=a&tag=b"}


def test_put_sends_a_json_body_and_a_nested_reply_maps_into_typed_outputs(http, api, httpbin):
    one_step(http, api, {
        "name": "put-order", "address": httpbin,
        "inputs": [{"name": "order_id", "type": "string"}, {"name": "order", "type": "object"}],
        "outputs": [{"name": "total", "type": "float", "from": "body.json.order.total"},
                    {"name": "skus", "type": "array", "from": "body.json.order.lines[].sku"},
                    {"name": "method", "type": "string", "from": "body.method"}],
        "request": {"method": "PUT", "path": "/anything/orders/{order_id}", "body": ["order"]},
    }, inputs=[{"name": "order_id", "type": "string"}, {"name": "order", "type": "object"}],
        outputs=[{"name": "total", "type": "float"}, {"name": "skus", "type": "array"},
                 {"name": "method", "type": "string"}])
    order = {"total": 12.5, "lines": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}]}
    response = http.post(f"{api}/e/put-order", json={"order_id": "42", "order": order}, timeout=30)
    assert response.status_code == 201, response.json()
    assert response.json()["outputs"] == {"total": 12.5, "skus": ["a-1", "b-2"], "method": "PUT"}


def test_a_mistyped_nested_output_is_a_contract_failure(http, api, httpbin):
    one_step(http, api, {
        "name": "wrong-type", "address": httpbin, "inputs": [{"name": "order", "type": "object"}],
        "outputs": [{"name": "total", "type": "int", "from": "body.json.order.total"}],
        "request": {"method": "POST", "path": "/post"},
    }, inputs=[{"name": "order", "type": "object"}], outputs=[{"name": "total", "type": "int"}])
    response = http.post(f"{api}/e/wrong-type", json={"order": {"total": "12.5"}}, timeout=30)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["kind"] == "contract" and "total: expected int, got string" in error["message"]


def test_an_output_expression_that_fails_on_the_reply_is_a_contract_failure(http, api, httpbin):
    """length() of a value that is not an array, string or object: the step fails with kind contract,
    naming the output and why, rather than the call crashing."""
    one_step(http, api, {
        "name": "count-lines", "address": httpbin, "inputs": [{"name": "order", "type": "object"}],
        "outputs": [{"name": "count", "type": "int", "from": "length(body.json.order.lines)"}],
        "request": {"method": "POST", "path": "/post"},
    }, inputs=[{"name": "order", "type": "object"}], outputs=[{"name": "count", "type": "int"}])
    response = http.post(f"{api}/e/count-lines", json={"order": {"lines": 7}}, timeout=30)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["kind"] == "contract" and "count: `from` cannot be read from this reply" in error["message"]
    fine = http.post(f"{api}/e/count-lines", json={"order": {"lines": [1, 2, 3]}}, timeout=30)
    assert fine.status_code == 201 and fine.json()["outputs"] == {"count": 3}


def test_delete_sends_no_body_and_its_inputs_go_in_the_query(http, api, httpbin):
    one_step(http, api, {
        "name": "delete-order", "address": httpbin,
        "inputs": [{"name": "reason", "type": "string"}],
        "outputs": [{"name": "args", "type": "object", "from": "body.args"},
                    {"name": "sent", "type": "any", "from": "body.data"}],
        "request": {"method": "DELETE", "path": "/delete"},
    }, inputs=[{"name": "reason", "type": "string"}],
        outputs=[{"name": "args", "type": "object"}, {"name": "sent", "type": "any"}])
    response = http.post(f"{api}/e/delete-order", json={"reason": "duplicate"}, timeout=30)
    assert response.status_code == 201, response.json()
    assert response.json()["outputs"] == {"args": {"reason": "duplicate"}, "sent": ""}


def test_templated_headers_and_a_secret_bearer_token(http, api, httpbin):
    assert http.put(f"{api}/secrets/bin_token", json={"value": "tok-123-secret"}, timeout=10).status_code == 201
    one_step(http, api, {
        "name": "bearer", "address": httpbin, "inputs": [{"name": "tenant", "type": "string"}],
        "outputs": [{"name": "authenticated", "type": "bool", "from": "body.authenticated"},
                    {"name": "token", "type": "string", "from": "body.token"}],
        "request": {"method": "GET", "path": "/bearer",
                    "headers": {"Authorization": "Bearer {secret.bin_token}", "X-Tenant": "{tenant}"}},
    }, inputs=[{"name": "tenant", "type": "string"}],
        outputs=[{"name": "authenticated", "type": "bool"}, {"name": "token", "type": "string"}])
    response = http.post(f"{api}/e/bearer", json={"tenant": "acme"}, timeout=30)
    assert response.status_code == 201, response.json()
    # httpbin answers the token it was sent: Machinery keeps it masked.
    assert response.json()["outputs"] == {"authenticated": True, "token": "***"}
    step = http.get(f"{api}/events/{response.json()['event_id']}", timeout=10).json()["steps"][0]
    assert step["request"]["headers"] == {"Authorization": "***", "X-Tenant": "acme"}


def test_without_the_secret_bearer_is_refused_at_once(http, api, httpbin):
    one_step(http, api, {
        "name": "no-bearer", "address": httpbin, "inputs": [], "outputs": [{"name": "token", "type": "string",
                                                                             "from": "body.token"}],
        "request": {"method": "GET", "path": "/bearer"}, "retry": {"max_attempts": 3, "backoff_s": 0},
    }, inputs=[], outputs=[{"name": "token", "type": "string"}])
    response = http.post(f"{api}/e/no-bearer", json={}, timeout=30)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["kind"] == "http_status" and error["status"] == 401 and "after" not in error["message"]


def test_a_404_declared_as_success_is_a_typed_outcome(http, api, httpbin):
    one_step(http, api, {
        "name": "lookup", "address": httpbin, "inputs": [{"name": "code", "type": "int"}],
        "outputs": [{"name": "status", "type": "int", "from": "status"}],
        "request": {"method": "GET", "path": "/status/{code}"}, "success": [200, 404],
    }, inputs=[{"name": "code", "type": "int"}], outputs=[{"name": "status", "type": "int"}])
    found = http.post(f"{api}/e/lookup", json={"code": 404}, timeout=30)
    assert found.status_code == 201 and found.json()["outputs"] == {"status": 404}
    ok = http.post(f"{api}/e/lookup", json={"code": 200}, timeout=30)
    assert ok.status_code == 201 and ok.json()["outputs"] == {"status": 200}
    other = http.post(f"{api}/e/lookup", json={"code": 204}, timeout=30)
    assert other.status_code == 502 and "not among its success statuses 200, 404" in other.json()["error"]["message"]


def test_a_5xx_is_retried_then_a_replay_with_another_value_completes(http, api, httpbin):
    one_step(http, api, {
        "name": "status", "address": httpbin, "inputs": [{"name": "code", "type": "int"}],
        "outputs": [{"name": "status", "type": "int", "from": "status"}],
        "request": {"method": "GET", "path": "/status/{code}"}, "retry": {"max_attempts": 3, "backoff_s": 0.01},
    }, inputs=[{"name": "code", "type": "int"}], outputs=[{"name": "status", "type": "int"}])
    failed = http.post(f"{api}/e/status", json={"code": 503}, timeout=30)
    assert failed.status_code == 502
    event_id = failed.json()["event_id"]
    record = http.get(f"{api}/events/{event_id}", timeout=10).json()
    assert [attempt["status"] for attempt in record["steps"][0]["attempt_log"]] == [503, 503, 503]
    assert record["steps"][0]["request"]["url"] == f"{httpbin}/status/503"
    resumed = http.post(f"{api}/events/{event_id}/retry", timeout=30)
    assert resumed.json()["status"] == "failed"
    replayed = http.post(f"{api}/events/{event_id}/retry", json={"from_step": 0, "context": {"code": 200}}, timeout=30)
    assert replayed.status_code in (200, 201), replayed.json()
    assert replayed.json()["status"] == "completed" and replayed.json()["outputs"] == {"status": 200}


CHAIN = {"name": "shout-through-httpbin", "services": ["upper", "bin-echo", "reverse"],
         "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}]}


@pytest.fixture
def chain(http, api, httpbin, example_services):
    register_examples_over_http(http, api, example_services)
    register(http, api, {
        "name": "bin-echo", "address": httpbin, "inputs": [{"name": "message", "type": "string"}],
        "outputs": [{"name": "message", "type": "string", "from": "body.args.m"}],
        "request": {"method": "GET", "path": "/anything/{message}", "query": {"m": "message"},
                    "headers": {"X-Message": "{message}"}},
    })
    assert http.post(f"{api}/workflows", json=CHAIN, timeout=10).status_code in (200, 201)


def test_a_rest_service_chains_with_the_example_services_sync(http, api, chain):
    response = http.post(f"{api}/e/shout-through-httpbin", json={"message": "hello there"}, timeout=30)
    assert response.status_code == 201, response.json()
    assert response.json()["outputs"] == {"message": "EREHT OLLEH"}
    steps = http.get(f"{api}/events/{response.json()['event_id']}", timeout=10).json()["steps"]
    assert [step["service"] for step in steps] == ["upper", "bin-echo", "reverse"]
    assert "request" not in steps[0] and steps[1]["request"]["method"] == "GET"
    assert steps[1]["request"]["headers"] == {"X-Message": "HELLO THERE"}


def test_a_rest_service_chains_with_the_example_services_async(http, api, chain):
    response = http.post(f"{api}/e/shout-through-httpbin?mode=async", json={"message": "a/b c"}, timeout=30)
    assert response.status_code == 202
    event = finished(http, api, response.json()["event_id"])
    assert event["status"] == "completed" and event["outputs"] == {"message": "C B/A"}
    assert event["steps"][1]["request"]["url"].endswith("/anything/A%2FB%20C?m=A%2FB%20C")


LINES = {"type": "array", "items": {"type": "object", "fields": [{"name": "sku", "type": "string"},
                                                                 {"name": "qty", "type": "int"}]}}


def test_a_nested_typed_output_is_checked_deep_naming_the_path(http, api, httpbin):
    one_step(http, api, {
        "name": "lines", "address": httpbin, "inputs": [{"name": "order", "type": "object"}],
        "outputs": [{"name": "lines", "type": LINES, "from": "body.json.order.lines"}],
        "request": {"method": "POST", "path": "/anything"},
    }, inputs=[{"name": "order", "type": "object"}], outputs=[{"name": "lines", "type": LINES}])
    good = http.post(f"{api}/e/lines", json={"order": {"lines": [{"sku": "a", "qty": 1}]}}, timeout=30)
    assert good.status_code == 201 and good.json()["outputs"] == {"lines": [{"sku": "a", "qty": 1}]}
    bad = http.post(f"{api}/e/lines", json={"order": {"lines": [{"sku": "a", "qty": 1}, {"sku": 7, "qty": 1}]}},
                    timeout=30)
    assert bad.status_code == 502 and bad.json()["error"]["kind"] == "contract"
    assert "lines[1].sku: expected string, got int" in bad.json()["error"]["message"]
