"""Structured types through the API: definitions that nest, bad types refused naming their path,
JSON Schemas converted with warnings, and event data checked path by path."""

import pytest

LINES = {"type": "array", "items": {"type": "object", "fields": [
    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}


def service(name="orders", inputs=None, outputs=None):
    return {"name": name, "address": "http://127.0.0.1:9/",
            "inputs": inputs if inputs is not None else [{"name": "lines", "type": LINES}],
            "outputs": outputs if outputs is not None else [{"name": "count", "type": "int"}]}


def workflow(inputs=None, outputs=None):
    return {"name": "pick", "services": ["orders"],
            "inputs": inputs if inputs is not None else [{"name": "lines", "type": LINES}],
            "outputs": outputs if outputs is not None else [{"name": "count", "type": "int"}]}


def line(n):
    return {"sku": f"s{n}", "qty": n}


def test_a_service_with_nested_types_registers_and_reads_back_as_given(client):
    response = client.post("/services", json=service())
    assert response.status_code == 201, response.get_json()
    assert client.get("/services/orders").get_json()["inputs"] == [{"name": "lines", "type": LINES}]
    assert "warnings" not in response.get_json()


def test_event_data_is_checked_path_by_path(client):
    assert client.post("/services", json=service()).status_code == 201
    assert client.post("/workflows", json=workflow()).status_code == 201
    lines = [line(n) for n in range(3)] + [{"sku": 4, "qty": 4}]
    response = client.post("/e/pick", json={"data": {"lines": lines}})
    assert response.status_code == 422
    body = response.get_json()
    assert body["errors"] == {"lines[3].sku": "expected string, got int"}
    assert "lines[3].sku: expected string, got int" in body["message"]
    assert client.get("/events?workflow=pick").get_json()["total"] == 0


@pytest.mark.parametrize("field, where, words", [
    ({"name": "x", "type": "strin"}, "type", "unknown type 'strin'"),
    ({"name": "x", "type": {"type": "array", "items": "strin"}}, "type", "type.items: unknown type 'strin'"),
    ({"name": "x", "type": {"type": "object", "fields": [{"name": "a", "type": {"type": "list", "items": 3}}]}},
     "type", "type.fields[0].type.items: must be a type name or an object"),
    ({"name": "x", "type": {"type": "object", "fields": [{"name": "a"}]}}, "type",
     "type.fields[0]: needs a 'type'"),
    ({"name": "x", "type": {"type": "object", "fields": [{"name": "a", "type": "int"}] * 2}}, "type",
     "type.fields[1].name: 'a' is declared twice"),
    ({"name": "x", "type": "string", "enum": ["a", 1]}, "enum", 'enum[1]: 1 is not a string'),
    ({"name": "x", "type": "string", "required": "sometimes"}, "required", "Not a valid boolean"),
    ({"name": "x", "schema": 3}, "schema", "must be a JSON Schema"),
    ({"name": "x", "schema": {"type": "integer"}, "type": "string"}, "type", "disagrees with the field's schema"),
    ({"name": "x"}, "type", "needs a 'type' (or a JSON Schema under 'schema')"),
])
def test_a_bad_type_is_refused_naming_the_path_and_the_store_is_unchanged(client, field, where, words):
    assert client.post("/services", json=service(name="kept")).status_code == 201
    response = client.post("/services", json=service(name="kept", outputs=[field]))
    assert response.status_code == 422
    errors = response.get_json()["errors"]["outputs"]["0"][where]
    assert any(words in text for text in errors), errors
    assert client.get("/services/kept").get_json()["outputs"] == [{"name": "count", "type": "int"}]


def nested(depth):
    spec = "int"
    for _ in range(depth - 1):
        spec = {"type": "array", "items": spec}
    return spec


def test_types_nested_too_deep_or_too_wide_are_refused(client):
    deep = client.post("/services", json=service(outputs=[{"name": "x", "type": nested(17)}]))
    assert deep.status_code == 422 and "nested deeper than 16 levels" in str(deep.get_json()["errors"])
    wide = {"type": "object", "fields": [{"name": f"f{n}", "type": "int"} for n in range(201)]}
    response = client.post("/services", json=service(outputs=[{"name": "x", "type": wide}]))
    assert response.status_code == 422 and "more than 200 fields" in str(response.get_json()["errors"])
    assert client.get("/services").get_json()["total"] == 0


ORDER_SCHEMA = {
    "type": "object", "required": ["lines"],
    "properties": {"lines": {"type": "array", "items": {"$ref": "#/$defs/line"}},
                   "note": {"type": ["string", "null"]},
                   "extra": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
    "$defs": {"line": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}},
}


def test_a_schema_is_converted_at_registration_and_what_became_any_is_a_warning(client):
    response = client.post("/services", json=service(outputs=[{"name": "order", "schema": ORDER_SCHEMA}]))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["warnings"] == ["outputs[0].schema.properties.extra.oneOf: 'oneOf' of several types became any"]
    [output] = client.get("/services/orders").get_json()["outputs"]
    assert output["schema"] == ORDER_SCHEMA
    assert output["type"] == {"type": "object", "fields": [
        {"name": "lines", "type": {"type": "array", "items": {"type": "object", "fields": [
            {"name": "sku", "type": "string"}]}}},
        {"name": "note", "type": {"type": "string", "nullable": True}, "required": False},
        {"name": "extra", "type": "any", "required": False}]}
    again = client.put("/services/orders", json=service(outputs=[output]))
    assert again.status_code == 200 and again.get_json()["outputs"] == [output]


def test_a_workflow_checks_nested_types_at_registration_naming_the_path(client):
    wants = {"type": "array", "items": {"type": "object", "fields": [{"name": "sku", "type": "int"}]}}
    assert client.post("/services", json=service(inputs=[{"name": "lines", "type": wants}])).status_code == 201
    response = client.post("/workflows", json=workflow())
    assert response.status_code == 422
    [problem] = response.get_json()["errors"]
    assert "[].sku: expected int, got string" in problem["problem"]
    assert problem["available"] == {"lines": "array<object{sku: string, qty: int}>"}


def test_an_optional_workflow_input_may_be_left_out_of_event_data(client):
    optional = [{"name": "lines", "type": LINES, "required": False}]
    assert client.post("/services", json=service(inputs=optional)).status_code == 201
    assert client.post("/workflows", json=workflow(inputs=optional, outputs=[])).status_code == 201
    assert client.post("/e/pick?mode=async", json={"data": {}}).status_code in (201, 202)
    refused = client.post("/e/pick?mode=async", json={"data": {"lines": None}})
    assert refused.status_code == 422 and refused.get_json()["errors"] == {"lines": "expected array, got null"}
