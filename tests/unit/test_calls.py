"""Requests built from a service's `request`, replies read through outputs' `from`, and what registration refuses."""

from __future__ import annotations

import pytest

from machinery.exceptions import InvalidData, ServiceCallError
from machinery.runtime import calls

SECRETS = {"token": "s3cr3t"}


def service(request=None, inputs=(), outputs=(), **extra):
    return {"name": "svc", "address": "http://api.local:8080/v1/",
            "inputs": [{"name": name, "type": kind} for name, kind in inputs],
            "outputs": list(outputs), **({"request": request} if request is not None else {}), **extra}


def prepare(definition, inputs, machinery_headers=None):
    call = calls.Call(calls.checked(definition, SECRETS.__contains__))
    return call.prepare(inputs, machinery_headers or {"Content-Type": "application/json", "X-Machinery-Step": "0"},
                        SECRETS.__getitem__)


@pytest.mark.parametrize("value, encoded", [
    ("a/b", "a%2Fb"),
    ("two words", "two%20words"),
    ("crème brûlée", "cr%C3%A8me%20br%C3%BBl%C3%A9e"),
    ("100%", "100%25"),
    ("a?b#c&d=e", "a%3Fb%23c%26d%3De"),
    ("safe-._~", "safe-._~"),
    (42, "42"),
    (True, "true"),
    (2.5, "2.5"),
])
def test_path_placeholders_are_percent_encoded_slash_included(value, encoded):
    kind = {str: "string", int: "int", bool: "bool", float: "float"}[type(value)]
    prepared = prepare(service({"method": "GET", "path": "/orders/{id}"}, inputs=[("id", kind)]), {"id": value})
    assert prepared.path == f"/v1/orders/{encoded}"
    assert prepared.record["url"] == f"http://api.local:8080/v1/orders/{encoded}"
    assert prepared.body is None


def test_an_array_input_repeats_its_query_parameter_and_an_absent_one_sends_none():
    definition = service({"method": "GET", "path": "/search", "query": {"tag": "tags", "q": "text", "n": "limit"}},
                         inputs=[("tags", "array"), ("text", "string"), ("limit", "int")])
    prepared = prepare(definition, {"tags": ["a b", "é", 3], "text": "x&y"})
    assert prepared.path == "/v1/search?tag=a%20b&tag=%C3%A9&tag=3&q=x%26y"


def test_get_puts_inputs_placed_nowhere_in_the_query_and_sends_no_body_or_content_type():
    definition = service({"method": "GET", "path": "/orders/{id}"}, inputs=[("id", "string"), ("expand", "string")])
    prepared = prepare(definition, {"id": "7", "expand": "lines"})
    assert prepared.path == "/v1/orders/7?expand=lines"
    assert prepared.body is None
    assert "Content-Type" not in dict(prepared.headers)
    assert dict(prepared.headers)["X-Machinery-Step"] == "0"


def test_post_puts_inputs_placed_nowhere_in_the_json_body():
    definition = service({"method": "POST", "path": "/orders/{id}/notes"},
                         inputs=[("id", "string"), ("note", "string"), ("pages", "int")])
    prepared = prepare(definition, {"id": "7", "note": "hi", "pages": 2})
    assert prepared.body == b'{"note":"hi","pages":2}'
    assert dict(prepared.headers)["Content-Type"] == "application/json"


def test_a_body_may_be_a_list_of_inputs_one_object_input_or_none():
    inputs = [("id", "string"), ("order", "object"), ("note", "string")]
    listed = prepare(service({"method": "PUT", "path": "/o/{id}", "body": ["note"]}, inputs=inputs),
                     {"id": "1", "order": {"a": 1}, "note": "n"})
    assert listed.body == b'{"note":"n"}'
    whole = prepare(service({"method": "PATCH", "path": "/o/{id}", "body": "order"}, inputs=inputs),
                    {"id": "1", "order": {"a": [1, 2]}, "note": "n"})
    assert whole.body == b'{"a":[1,2]}'
    empty = prepare(service({"method": "POST", "path": "/o/{id}/ping", "body": None}, inputs=inputs),
                    {"id": "1", "order": {}, "note": "n"})
    assert empty.body is None


def test_header_templates_hold_inputs_and_secrets_and_the_record_shows_secrets_as_stars():
    definition = service({"method": "GET", "path": "/me", "headers": {
        "Authorization": "Bearer {secret.token}", "X-Tenant": "{tenant}-eu", "Accept": "application/vnd.x+json"}},
        inputs=[("tenant", "string")])
    prepared = prepare(definition, {"tenant": "acme"})
    sent = dict(prepared.headers)
    assert sent["Authorization"] == "Bearer s3cr3t"
    assert sent["X-Tenant"] == "acme-eu"
    assert [value for name, value in prepared.headers if name == "Accept"] == ["application/vnd.x+json"]
    assert prepared.record == {"method": "GET", "url": "http://api.local:8080/v1/me",
                               "headers": {"Authorization": "***", "X-Tenant": "acme-eu",
                                           "Accept": "application/vnd.x+json"}}
    assert prepared.secrets == ["s3cr3t"]


def test_a_header_of_an_absent_optional_input_is_not_sent():
    definition = service({"method": "GET", "path": "/me", "headers": {"X-Tenant": "{tenant}"}},
                         inputs=[("tenant", "string")])
    assert "X-Tenant" not in dict(prepare(definition, {}).headers)


def test_an_input_value_that_cannot_be_placed_fails_the_call_without_retry():
    definition = service({"method": "GET", "path": "/o/{id}", "headers": {"X-A": "{a}"}},
                         inputs=[("id", "any"), ("a", "string")])
    with pytest.raises(ServiceCallError) as raised:
        prepare(definition, {"id": {"nested": 1}})
    assert raised.value.kind == "request" and not raised.value.retryable
    with pytest.raises(ServiceCallError, match="line break"):
        prepare(definition, {"id": "1", "a": "x\r\nInjected: 1"})


def test_outputs_come_from_expressions_over_status_headers_and_body():
    definition = service({"method": "GET", "path": "/o"}, outputs=[
        {"name": "total", "type": "float", "from": "body.order.total"},
        {"name": "skus", "type": "array", "from": "body.order.lines[].sku"},
        {"name": "code", "type": "int", "from": "status"},
        {"name": "etag", "type": "string", "from": "headers.etag"},
        {"name": "plain", "type": "string"},
        {"name": "gone", "type": "string", "from": "body.nothing"},
    ])
    call = calls.Call(calls.checked(definition, SECRETS.__contains__))
    view = call.view(200, {"ETag": '"v1"'},
                     b'{"plain": "p", "order": {"total": 12.5, "lines": [{"sku": "a"}, {"sku": "b"}]}}')
    assert call.select(view) == {"total": 12.5, "skus": ["a", "b"], "code": 200, "etag": '"v1"', "plain": "p"}


def test_a_reply_that_is_not_json_is_its_text_and_an_empty_one_is_null():
    call = calls.Call(calls.checked(service(outputs=[{"name": "text", "type": "string", "from": "body"}]),
                                    SECRETS.__contains__))
    assert call.select(call.view(200, {}, b"<p>hi</p>")) == {"text": "<p>hi</p>"}
    assert call.select(call.view(404, {}, b"")) == {}


def test_an_expression_that_cannot_be_evaluated_on_a_reply_is_a_problem_not_a_crash():
    call = calls.Call(calls.checked(service(outputs=[
        {"name": "count", "type": "int", "from": "length(body.lines)"},
        {"name": "first", "type": "string", "from": "body.lines[0]"},
    ]), SECRETS.__contains__))
    problems: dict = {}
    assert call.select(call.view(200, {}, b'{"lines": null}'), problems) == {}
    assert list(problems) == ["count"] and problems["count"].startswith("`from` cannot be read from this reply")
    problems.clear()
    assert call.select(call.view(200, {}, b'{"lines": ["x"]}'), problems) == {"count": 1, "first": "x"}
    assert problems == {}


def test_a_call_knows_whether_it_maps_outputs_and_which_secrets_it_sends():
    plain = calls.Call(calls.checked(service({"method": "GET", "path": "/o"}), SECRETS.__contains__))
    assert not plain.maps_outputs and plain.secret_names == ()
    mapped = calls.Call(calls.checked(service({"headers": {"Authorization": "Bearer {secret.token}",
                                                           "X-Both": "{secret.token}-{secret.other}"}},
                                              outputs=[{"name": "n", "type": "int", "from": "body.n"}]),
                                      {"token", "other"}.__contains__))
    assert mapped.maps_outputs and mapped.secret_names == ("token", "other")


def test_compiled_calls_are_kept_by_fingerprint_not_rebuilt_per_call():
    definition = calls.checked(service({"method": "GET", "path": "/o/{id}"}, inputs=[("id", "string")]),
                               SECRETS.__contains__)
    first = calls.compiled(dict(definition))
    assert calls.compiled(dict(definition)) is first
    changed = calls.checked(service({"method": "GET", "path": "/p/{id}"}, inputs=[("id", "string")]),
                            SECRETS.__contains__)
    assert changed["fingerprint"] != definition["fingerprint"]
    assert calls.compiled(changed) is not first


def test_a_version_1_definition_gets_no_fingerprint():
    assert calls.checked(service(inputs=[("message", "string")]), SECRETS.__contains__)["fingerprint"] is None


def test_mask_replaces_every_secret_in_nested_values_and_keys():
    masked = calls.mask({"Authorization": "Bearer s3cr3t", "list": ["xs3cr3tx", 1], "s3cr3t": None}, ["s3cr3t"])
    assert masked == {"Authorization": "Bearer ***", "list": ["x***x", 1], "***": None}


@pytest.mark.parametrize("request_, where, words", [
    ({"path": "/o/{"}, "request.path", "never closed"),
    ({"path": "/o/{}"}, "request.path", "empty placeholder"),
    ({"path": "/o/{a b}"}, "request.path", "not a name"),
    ({"path": "/o/}"}, "request.path", "closes no placeholder"),
    ({"path": "/o/{+id}"}, "request.path", "only simple expansion"),
    ({"path": "/o/{nope}"}, "request.path", "{nope} names no declared input"),
    ({"path": "o/{id}"}, "request.path", "must start with '/'"),
    ({"path": "/o?x=1"}, "request.path", "no query"),
    ({"path": "/o/{secret.token}"}, "request.path", "secrets go only in headers"),
    ({"path": "/o/{blob}"}, "request.path", "only a scalar input"),
    ({"query": {"q": "missing"}}, "request.query.q", "names no declared input"),
    ({"query": {"q": "blob"}}, "request.query.q", "a scalar or an array"),
    ({"headers": {"X-A": "{missing}"}}, "request.headers.X-A", "names no declared input"),
    ({"headers": {"X-A": "{secret.unknown}"}}, "request.headers.X-A", "{secret.unknown} names no secret"),
    ({"headers": {"Bad Name": "x"}}, "request.headers.Bad Name", "not a valid header name"),
    ({"headers": {"Host": "x"}}, "request.headers.Host", "set by Machinery"),
    ({"headers": {"content-length": "1"}}, "request.headers.content-length", "set by Machinery"),
    ({"headers": {"X-Machinery-Event": "x"}}, "request.headers.X-Machinery-Event", "set by Machinery"),
    ({"headers": {"X-A": "a\nb"}}, "request.headers.X-A", "line break"),
    ({"method": "GET", "body": ["id"]}, "request.body", "sends no body"),
    ({"body": "id"}, "request.body", "one object input"),
    ({"body": ["ghost"]}, "request.body", "names no declared input 'ghost'"),
])
def test_registration_refuses_each_bad_request_naming_where(request_, where, words):
    definition = service(request_, inputs=[("id", "string"), ("blob", "object")])
    with pytest.raises(InvalidData) as raised:
        calls.checked(definition, SECRETS.__contains__)
    assert where in raised.value.errors, raised.value.errors
    assert words in " ".join(raised.value.errors[where]), raised.value.errors
    assert words in raised.value.message or len(raised.value.errors) > 1 or where in raised.value.message


@pytest.mark.parametrize("expression, words", [
    ("body.", "at position 5"),
    ("body[", "at position 5"),
    ("`x", "at position 0"),
    ("order.total", "did you mean 'body.order.total'"),
])
def test_a_bad_expression_is_refused_naming_the_output_and_the_position(expression, words):
    definition = service(outputs=[{"name": "total", "type": "float", "from": expression}])
    with pytest.raises(InvalidData) as raised:
        calls.checked(definition, SECRETS.__contains__)
    problems = raised.value.errors["outputs[0].from"]
    assert "output 'total'" in problems[0] and words in problems[0], problems
