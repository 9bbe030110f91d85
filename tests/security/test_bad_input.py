"""Bad input gets a clear 4xx and leaves the store exactly as it was."""

from __future__ import annotations

import io
import json

import pytest

from machinery.api.body import MAX_DEPTH
from tests.security.conftest import SERVICE, close, make_app, snapshot, workflow

# A body may nest as deep as a step tree needs (api/body.py), a stored value less (guard.MAX_DEPTH).
DEEP = "[" * 40 + "]" * 40
DEEPER = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
VERY_DEEP = "[" * 30_000 + "]" * 30_000  # under the 64 KiB body limit of these tests


@pytest.fixture(scope="module")
def app():
    app = make_app(MAX_BODY_BYTES=64 * 1024)
    client = app.test_client()
    assert client.post("/services", json=SERVICE).status_code == 201
    assert client.post("/workflows", json=workflow("w")).status_code == 201
    answer = client.post("/e/w?mode=async", json={"message": "first"})
    assert answer.status_code == 202
    app.config["event_id"] = answer.get_json()["event_id"]
    yield app
    close(app)


def raw(text: str) -> bytes:
    return text.encode()


BAD_BODIES = [  # (id, path, raw body, expected status, words the message holds)
    ("deep nesting", "/e/w", raw('{"message": "x", "n": ' + DEEP + "}"), 422, "nested more than 32 levels deep"),
    ("nesting past the body limit", "/e/w", raw('{"message": "x", "n": ' + DEEPER + "}"), 400,
     f"nested more than {MAX_DEPTH} levels deep"),
    ("very deep nesting", "/e/w", raw(VERY_DEEP), 400, f"nested more than {MAX_DEPTH}"),
    ("not UTF-8", "/e/w", b'{"message": "\xff\xfe"}', 400, "not UTF-8"),
    ("duplicate keys", "/e/w", raw('{"message": "a", "message": "b"}'), 400, "appears twice"),
    ("NaN", "/e/w", raw('{"message": "x", "n": NaN}'), 400, "NaN is not a JSON number"),
    ("Infinity", "/e/w", raw('{"message": "x", "n": -Infinity}'), 400, "not a JSON number"),
    ("overflowing float", "/e/w", raw('{"message": "x", "n": 1e999}'), 400, "out of range"),
    ("huge integer", "/e/w", raw('{"message": "x", "n": ' + "9" * 5000 + "}"), 400, "out of range"),
    ("int beyond 64 bits", "/e/w", raw('{"message": "x", "n": 9223372036854775808}'), 400, "64 bits"),
    ("lone surrogate", "/e/w", raw('{"message": "\\ud800"}'), 400, "lone surrogate"),
    ("lone surrogate key", "/e/w", raw('{"message": "x", "\\udc00": 1}'), 400, "lone surrogate"),
    ("$where in data", "/e/w", raw('{"message": "x", "$where": "sleep(1000)"}'), 422, "must not start with '$'"),
    ("$gt nested in data", "/e/w", raw('{"message": {"$gt": ""}}'), 422, "must not start with '$'"),
    ("dotted key in data", "/e/w", raw('{"message": "x", "a.b": 1}'), 422, "must not contain '.'"),
    ("NUL in a key", "/e/w", raw('{"message": "x", "a\\u0000b": 1}'), 422, "NUL"),
    ("$ key deep in envelope data", "/e/w", raw('{"data": {"message": "x", "o": [{"$set": 1}]}}'), 422, "o[0].$set"),
    ("huge string", "/e/w", raw('{"message": "' + "x" * 100_000 + '"}'), 413, "MACHINERY_MAX_BODY_BYTES"),
    ("a list, not an object", "/e/w", raw("[1, 2]"), 422, "must be a JSON object, got array"),
    ("empty body", "/e/w", b"", 400, "empty"),
    ("$where as a service name", "/services", raw(json.dumps({**SERVICE, "name": "$where"})), 422, "name"),
    ("$gt as a field name", "/services",
     raw(json.dumps({**SERVICE, "name": "s2", "inputs": [{"name": "$gt", "type": "string"}]})), 422, "'$'"),
    ("dotted field name", "/services",
     raw(json.dumps({**SERVICE, "name": "s2", "outputs": [{"name": "a.b", "type": "string"}]})), 422, "'.'"),
    ("control char in field name", "/services",
     raw(json.dumps({**SERVICE, "name": "s2", "inputs": [{"name": "a\u0001", "type": "string"}]})), 422, "control"),
    ("name too long", "/services", raw(json.dumps({**SERVICE, "name": "s" * 101})), 422, "name"),
    ("operator in an operation", "/workflows",
     raw(json.dumps({**workflow("w3"), "operations": [{"service": "up", "inputs": {"message": "$where"}}]})), 422,
     "operations"),
    ("too many steps", "/workflows", raw(json.dumps({**workflow("w3"), "services": ["up"] * 101})), 422, "services"),
    ("short ingest token", "/workflows", raw(json.dumps(workflow("w3", ingest_token="short"))), 422, "ingest_token"),
    ("$ key in replay context", "/events/{event}/retry", raw('{"context": {"message": {"$ne": 1}}}'), 409, ""),
]


@pytest.mark.parametrize("path,body,status,words", [case[1:] for case in BAD_BODIES],
                         ids=[case[0] for case in BAD_BODIES])
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(app, path, body, status, words):
    store = app.extensions["machinery"].store
    before = snapshot(store)
    response = app.test_client().post(path.format(event=app.config["event_id"]), data=body,
                                      content_type="application/json")
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    document = response.get_json()
    assert set(document) <= {"code", "status", "message", "errors"} and document["code"] == status
    assert words in json.dumps(document) or words in document["message"]
    assert snapshot(store) == before


@pytest.mark.parametrize("path", ["/events/not-an-id", "/events/" + "0" * 24, "/events/$where",
                                  "/services/{\"$gt\": \"\"}", "/workflows/..%2F..", "/ui/events/not-an-id"])
def test_ids_that_are_not_object_ids_answer_404(app, path):
    store = app.extensions["machinery"].store
    before = snapshot(store)
    assert app.test_client().get(path).status_code == 404
    assert snapshot(store) == before


@pytest.mark.parametrize("query", ["page_size=101", "page=0", "page_size=-1", "page=abc", "status=$ne"])
def test_page_arguments_out_of_range_answer_422(app, query):
    response = app.test_client().get(f"/events?{query}")
    assert response.status_code == 422
    assert response.get_json()["errors"]


def test_a_streamed_body_over_the_limit_without_content_length_answers_413(app):
    store = app.extensions["machinery"].store
    before = snapshot(store)
    body = io.BytesIO(b'{"message": "' + b"x" * 200_000 + b'"}')
    response = app.test_client().post("/e/w", input_stream=body, content_type="application/json",
                                      environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert "MACHINERY_MAX_BODY_BYTES" in response.get_json()["message"]
    assert snapshot(store) == before


def test_a_declared_content_length_over_the_limit_answers_413_before_reading(app):
    response = app.test_client().post("/services", data=b"{}" + b" " * 70_000, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json() == {"code": 413, "status": "Request Entity Too Large",
                                   "message": "the request body is larger than the 65536 bytes allowed "
                                              "(MACHINERY_MAX_BODY_BYTES)",
                                   "errors": {"body": ["at most 65536 bytes"]}}


def test_a_callback_with_operator_keys_is_refused_and_the_step_keeps_waiting():
    from machinery import events
    from machinery.exceptions import InvalidData

    app = make_app()
    try:
        store = app.extensions["machinery"].store
        client = app.test_client()
        client.post("/services", json={**SERVICE, "outputs": [{"name": "message", "type": "any"}]})
        client.post("/workflows", json={**workflow("w"), "outputs": [{"name": "message", "type": "any"}]})
        event, _ = events.new_event(store, "w", {"message": "x"}, owner="me")
        token = "tok"
        from machinery.runtime.executor import hash_token

        store.update_event(event["event_id"], {"$set": {"status": "waiting", "waiting": {
            "step": 0, "service": "up", "status": "waiting", "started_at": event["ack_date"],
            "token_hash": hash_token(token), "expires": event["ack_date"].replace(year=2999, tzinfo=None)}}})
        before = snapshot(store)
        with pytest.raises(InvalidData) as caught:
            events.complete_callback(store, token, {"message": {"$where": "1"}})
        assert "cannot be stored" in caught.value.message
        assert snapshot(store) == before
    finally:
        close(app)


def test_a_service_reply_with_operator_keys_is_a_contract_error_not_a_store_failure():
    from machinery.runtime.executor import check_outputs

    service = {"outputs": [{"name": "message", "type": "any"}, {"name": "n", "type": "float"}]}
    _, problems = check_outputs(service, {"message": {"ok": {"$where": 1}}, "n": float("nan")})
    assert "message" in problems and "'$'" in problems["message"]
    assert "n" in problems and "finite" in problems["n"]


# -- what the served spec states, the API enforces (found by schemathesis) ------------------

def _service(**changes):
    return {"name": "svc", "address": "http://svc.local:5000/", "inputs": [], "outputs": [], **changes}


@pytest.mark.parametrize("name", ["upper\n", "a b", "-up", "x" * 101])
def test_a_name_is_refused_as_the_spec_pattern_refuses_it(client, name):
    response = client.post("/services", json=_service(name=name))
    assert response.status_code == 422, response.get_json()
    assert "name" in response.get_json()["errors"]


@pytest.mark.parametrize("address", ["http://svc:65536/", "http://[91F4:2]:80/", "http://a.b/", "http://svc/\u00e9",
                                     "http://svc/a#b#c", "http://svc/\n", "ftp://svc/"])
def test_an_address_that_is_no_url_gets_422_naming_it_never_a_500(client, address):
    response = client.post("/services", json=_service(address=address))
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["errors"]["address"] == ["must be an http:// or https:// URL"]


@pytest.mark.parametrize("address", ["http://[fd00::5]:8080/x", "http://10.0.0.1:65535", "https://a-b.example.com./p?q=1#f",
                                     "http://localhost/%20"])
def test_an_address_the_spec_admits_is_accepted(client, address):
    assert client.post("/services", json=_service(address=address)).status_code in (200, 201)


def test_a_step_index_must_be_a_whole_number_not_a_string_or_float(client):
    client.post("/services", json=_service())
    flow = {"name": "f", "services": ["svc"], "inputs": [], "outputs": [],
            "operations": [{"service": "svc", "step": "0"}]}
    response = client.post("/workflows", json=flow)
    assert response.status_code == 422
    assert "step" in str(response.get_json()["errors"])


def test_an_empty_operations_object_from_first_prototype_clients_is_no_operations(client):
    client.post("/services", json=_service())
    flow = {"name": "f", "services": ["svc"], "inputs": [], "outputs": [], "operations": {}}
    response = client.post("/w", json=flow)
    assert response.status_code in (200, 201), response.get_json()
    assert response.get_json()["operations"] == []


def test_a_non_empty_operations_object_stays_a_422_naming_it(client):
    client.post("/services", json=_service())
    flow = {"name": "f", "services": ["svc"], "inputs": [], "outputs": [], "operations": {"svc": {"inputs": {}}}}
    response = client.post("/w", json=flow)
    assert response.status_code == 422
    assert "operations" in response.get_json()["errors"]
    assert "svc" in response.get_json()["message"]


def test_an_event_for_no_workflow_is_404_whatever_its_body(client):
    response = client.post("/e/nope", data='{"n": 123456789012345678901234567890}', content_type="application/json")
    assert response.status_code == 404


def test_a_callback_with_an_unknown_token_is_404_whatever_its_body(client):
    response = client.post("/callbacks/abc.def", data="", content_type="application/json")
    assert response.status_code == 404


def test_import_is_no_service_name_and_its_url_allows_only_post(client):
    response = client.post("/services", json=_service(name="import"))
    assert response.status_code == 422
    assert "reserved" in response.get_json()["errors"]["name"][0]
    assert sorted(client.options("/services/import").headers["Allow"].split(", ")) == ["OPTIONS", "POST"]
    assert client.get("/services/import").status_code == 405
