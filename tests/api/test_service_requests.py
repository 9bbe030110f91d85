"""Registering services with a request: a bad one is a 422 naming the problem, and the store is unchanged."""

from __future__ import annotations

import json

import pytest

from machinery import registry

GOOD = {"name": "orders", "address": "http://orders.local:8080/",
        "inputs": [{"name": "order_id", "type": "string"}, {"name": "tenant", "type": "string"}],
        "outputs": [{"name": "total", "type": "float", "from": "body.order.total"}],
        "request": {"method": "GET", "path": "/orders/{order_id}", "headers": {"X-Tenant": "{tenant}"}}}


def with_request(**changes):
    return {**GOOD, "request": {**GOOD["request"], **changes}}


BAD = [
    (with_request(path="/orders/{"), "request.path", "'{' at position 8 is never closed"),
    (with_request(path="/orders/{}"), "request.path", "empty placeholder '{}' at position 8"),
    (with_request(path="/orders/{a b}"), "request.path", "{a b} at position 8 is not a name"),
    (with_request(path="/orders/{order}"), "request.path", "{order} names no declared input"),
    (with_request(headers={"X-Tenant": "{tenant"}), "request.headers.X-Tenant", "never closed"),
    (with_request(headers={"Authorization": "Bearer {secret.missing}"}), "request.headers.Authorization",
     "{secret.missing} names no secret"),
    (with_request(headers={"Host": "evil"}), "request.headers.Host", "set by Machinery"),
    (with_request(headers={"X-Machinery-Step": "9"}), "request.headers.X-Machinery-Step", "set by Machinery"),
    (with_request(headers={"Transfer-Encoding": "chunked"}), "request.headers.Transfer-Encoding", "set by Machinery"),
    (with_request(headers={"Bad Header": "x"}), "request.headers.Bad Header", "not a valid header name"),
    ({**GOOD, "outputs": [{"name": "total", "type": "float", "from": "body.order["}]}, "outputs[0].from",
     "output 'total': 'body.order[' is not a JMESPath expression at position 11"),
]


@pytest.mark.parametrize("definition, where, words", BAD)
def test_a_bad_request_is_422_naming_it_and_nothing_is_stored(client, store, definition, where, words):
    response = client.post("/services", json=definition)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert words in body["message"], body
    assert where in body["errors"], body
    assert store.services.count_documents({}) == 0


@pytest.mark.parametrize("definition, where, words", BAD)
def test_a_bad_replacement_leaves_the_registered_service_as_it_was(client, store, definition, where, words):
    assert client.post("/services", json=GOOD).status_code == 201
    before = client.get("/services/orders").get_json()
    response = client.put("/services/orders", json=definition)
    assert response.status_code == 422 and words in response.get_json()["message"]
    assert client.get("/services/orders").get_json() == before


@pytest.mark.parametrize("changes, words", [
    ({"request": {"method": "TRACE"}}, "request.method"),
    ({"request": {"body": 3}}, "request.body"),
    ({"request": {"path": "/x", "verb": "GET"}}, "request.verb"),
    ({"success": [99]}, "success"),
    ({"success": []}, "success"),
    ({"outputs": [{"name": "total", "type": "float", "from": ""}]}, "outputs.0.from"),
])
def test_a_malformed_request_shape_is_422_naming_the_field(client, store, changes, words):
    response = client.post("/services", json={**GOOD, **changes})
    assert response.status_code == 422
    assert words in response.get_json()["message"], response.get_json()
    assert store.services.count_documents({}) == 0


def test_a_good_request_is_answered_as_registered_without_its_fingerprint(client):
    response = client.post("/services", json={**GOOD, "success": [200, 404]})
    assert response.status_code == 201
    body = response.get_json()
    assert body["request"] == {**GOOD["request"]} and body["success"] == [200, 404]
    assert body["outputs"][0]["from"] == "body.order.total"
    assert "fingerprint" not in body


def test_replacing_a_version_2_service_by_a_version_1_one_clears_its_request(client, store):
    assert client.post("/services", json=GOOD).status_code == 201
    plain = {key: GOOD[key] for key in ("name", "address", "inputs")}
    plain["outputs"] = [{"name": "total", "type": "float"}]
    assert client.put("/services/orders", json=plain).status_code == 200
    stored = store.get_service("orders")
    assert stored["request"] is None and stored["fingerprint"] is None


REPLY = {"body": {"type": {"type": "object", "fields": [
    {"name": "order", "type": {"type": "object", "fields": [
        {"name": "total", "type": "float"},
        {"name": "lines", "type": {"type": "array", "items": {"type": "object", "fields": [
            {"name": "sku", "type": "string"}, {"name": "qty", "type": "int", "required": False}]}}}]}},
    {"name": "note", "type": "string", "nullable": True}]}}}
FITTING_OUTPUTS = [{"name": "total", "type": "float", "from": "body.order.total"},
                   {"name": "skus", "type": {"type": "array", "items": "string"}, "from": "body.order.lines[*].sku"},
                   {"name": "count", "type": "int", "from": "length(body.order.lines)"},
                   {"name": "code", "type": "int", "from": "status"},
                   {"name": "note", "type": "string", "nullable": True}]


def test_outputs_that_fit_the_declared_reply_register_and_the_reply_is_kept_out_of_plans(client, store):
    service = {**GOOD, "reply": REPLY, "outputs": FITTING_OUTPUTS}
    response = client.post("/services", json=service)
    assert response.status_code == 201, response.get_json()
    assert client.get("/services/orders").get_json()["reply"]["body"]["type"]["fields"][0]["name"] == "order"
    workflow = {"name": "totals", "services": ["orders"], "inputs": GOOD["inputs"],
                "outputs": [{"name": "total", "type": "float"}]}
    assert client.post("/workflows", json=workflow).status_code == 201
    plan = registry.event_plan(store, store.get_workflow("totals"))
    service_in_plan = plan["steps"][0]["service"]
    assert service_in_plan["outputs"][0]["from"] == "body.order.total" and "reply" not in service_in_plan


@pytest.mark.parametrize("outputs, where, words", [
    ([{"name": "total", "type": "int", "from": "body.order.total"}], "outputs[0].from",
     "body.order.total is float in the declared reply, but the output is int"),
    ([{"name": "total", "type": "float", "from": "body.order.totl"}], "outputs[0].from",
     "no field 'totl'; body.order has total, lines"),
    ([{"name": "skus", "type": {"type": "array", "items": "int"}, "from": "body.order.lines[*].sku"}],
     "outputs[0].from", "expected int, got string"),
    ([{"name": "total", "type": "float"}], "outputs[0]", "body.total: no field 'total'; body has order, note"),
    ([{"name": "code", "type": "string", "from": "status"}], "outputs[0].from", "status is int"),
])
def test_an_output_the_declared_reply_proves_wrong_is_422_naming_it(client, store, outputs, where, words):
    response = client.post("/services", json={**GOOD, "reply": REPLY, "outputs": outputs})
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert where in body["errors"] and words in " ".join(body["errors"][where]), body
    assert store.services.count_documents({}) == 0


def test_what_a_reply_schema_cannot_say_is_a_warning_named_under_reply_body(client):
    reply = {"body": {"schema": {"type": "object", "properties": {
        "order": {"type": "object", "properties": {"total": {"type": "number"}}},
        "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}}}
    response = client.post("/services", json={**GOOD, "reply": reply})
    assert response.status_code == 201, response.get_json()
    assert any(warning.startswith("reply.body.schema.properties.either") for warning in response.get_json()["warnings"])
    # The schema is kept as given; what it cannot say (`either`) is any, which fits any output.
    assert client.get("/services/orders").get_json()["reply"]["body"]["schema"]["type"] == "object"
    assert client.put("/services/orders", json={**GOOD, "reply": reply, "outputs": [
        {"name": "either", "type": "int", "from": "body.either"}]}).status_code == 200


def test_a_malformed_reply_is_422_naming_the_field(client, store):
    for reply, words in (({"body": {"type": "decimal"}}, "reply"), ({}, "reply"),
                         ({"body": {"type": "string"}, "headers": {}}, "reply")):
        response = client.post("/services", json={**GOOD, "reply": reply})
        assert response.status_code == 422 and words in json.dumps(response.get_json()["errors"]), reply
    assert store.services.count_documents({}) == 0
