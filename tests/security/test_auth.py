"""Authentication: every endpoint against no key, a wrong key, each right, workflow tokens and signatures."""

from __future__ import annotations

import json
import logging

import pytest

from machinery import auth
from machinery.exceptions import ConfigError
from tests.security.conftest import (
    ADMIN_KEY,
    API_KEYS,
    HMAC_SECRET,
    OTHER_TOKEN,
    READ_KEY,
    SEND_KEY,
    SERVICE,
    TOKEN,
    WRONG_KEY,
    basic,
    bearer,
    close,
    make_app,
    workflow,
)

EVENT_BODY = json.dumps({"data": {"message": "hi"}}).encode()

# What each credential sends: headers, given the raw body of the request.
CREDENTIALS = {
    "none": lambda body: {},
    "wrong key": lambda body: bearer(WRONG_KEY),
    "admin key": lambda body: bearer(ADMIN_KEY),
    "read key": lambda body: bearer(READ_KEY),
    "send key": lambda body: bearer(SEND_KEY),
    "token of another workflow": lambda body: {"X-Machinery-Token": OTHER_TOKEN},
    "token of this workflow": lambda body: {"X-Machinery-Token": TOKEN},
    "bad signature": lambda body: {"X-Hub-Signature-256": auth.sign(body, "not-the-secret-at-all")},
    "good signature": lambda body: {"X-Hub-Signature-256": auth.sign(body, HMAC_SECRET)},
}
OK = "ok"  # neither 401 nor 403
EXPECTED = {  # endpoint kind -> credential -> outcome
    "read": {"none": 401, "wrong key": 401, "admin key": OK, "read key": OK, "send key": 403,
             "token of another workflow": 401, "token of this workflow": 401, "bad signature": 401,
             "good signature": 401},
    "admin": {"none": 401, "wrong key": 401, "admin key": OK, "read key": 403, "send key": 403,
              "token of another workflow": 401, "token of this workflow": 401, "bad signature": 401,
              "good signature": 401},
    "ingest": {"none": 401, "wrong key": 401, "admin key": OK, "read key": 403, "send key": OK,
               "token of another workflow": 401, "token of this workflow": OK, "bad signature": 401,
               "good signature": OK},
    "open": {name: OK for name in CREDENTIALS},
}
ENDPOINTS = [  # (kind, method, path, json body or None); {event} is a stored event's id
    ("read", "GET", "/services", None),
    ("read", "GET", "/services/up", None),
    ("admin", "POST", "/services", SERVICE),
    ("admin", "POST", "/s", SERVICE),
    ("admin", "PUT", "/services/up", SERVICE),
    ("admin", "DELETE", "/services/not-there", None),
    ("read", "GET", "/workflows", None),
    ("read", "GET", "/workflows/w", None),
    ("read", "GET", "/workflows/w/graph", None),
    ("admin", "POST", "/workflows", workflow("w2")),
    ("admin", "POST", "/w", workflow("w2")),
    ("admin", "DELETE", "/workflows/not-there", None),
    ("read", "GET", "/events", None),
    ("read", "GET", "/events/{event}", None),
    ("admin", "POST", "/events/{event}/retry", None),
    ("read", "GET", "/ui/workflows", None),
    ("read", "GET", "/ui/workflows/w", None),
    ("read", "GET", "/ui/services", None),
    ("read", "GET", "/ui/events", None),
    ("read", "GET", "/ui/events/{event}", None),
    ("admin", "POST", "/ui/events/{event}/retry", None),
    ("ingest", "POST", "/e/w?mode=async", {"data": {"message": "hi"}}),
    ("open", "GET", "/healthcheck", None),
    ("open", "GET", "/readyz", None),
    ("open", "GET", "/metrics", None),
    ("open", "GET", "/openapi.json", None),
    ("open", "POST", "/callbacks/no-such-token", {"message": "x"}),
    ("open", "GET", "/static/machinery.css", None),
]


@pytest.fixture(scope="module")
def secured():
    """An app with keys of each right, workflow `w` with a token and an HMAC secret, `other` with a token."""
    app = make_app(API_KEYS=API_KEYS)
    client = app.test_client()
    admin = bearer(ADMIN_KEY)
    assert client.post("/services", json=SERVICE, headers=admin).status_code == 201
    assert client.post("/workflows", json=workflow("w", ingest_token=TOKEN, ingest_hmac_secret=HMAC_SECRET),
                       headers=admin).status_code == 201
    assert client.post("/workflows", json=workflow("other", ingest_token=OTHER_TOKEN),
                       headers=admin).status_code == 201
    answer = client.post("/e/w?mode=async", json={"data": {"message": "hi"}}, headers=admin)
    assert answer.status_code == 202, answer.get_json()
    yield app, answer.get_json()["event_id"]
    close(app)


@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize("kind,method,path,body", ENDPOINTS, ids=[f"{m} {p}" for _, m, p, _ in ENDPOINTS])
def test_each_endpoint_admits_exactly_the_credentials_its_kind_allows(secured, kind, method, path, body, credential):
    app, event_id = secured
    raw = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    headers.update(CREDENTIALS[credential](raw))
    expected = EXPECTED[kind][credential]
    # Closed on the way out: a static file sent from disk stays open until its reply is closed.
    with app.test_client().open(path.format(event=event_id), method=method, data=raw, headers=headers) as response:
        if expected == OK:
            assert response.status_code not in (401, 403), response.get_data(as_text=True)[:300]
        else:
            assert response.status_code == expected, response.get_data(as_text=True)[:300]
            document = response.get_json()
            assert document["code"] == expected and document["message"]
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="machinery"')


def test_a_refused_request_names_no_credential_it_carried(secured):
    app, _ = secured
    response = app.test_client().get("/services", headers=bearer(WRONG_KEY))
    assert response.status_code == 401
    assert WRONG_KEY not in response.get_data(as_text=True)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_the_ui_offers_basic_so_a_browser_can_prompt(secured):
    app, _ = secured
    response = app.test_client().get("/ui/workflows")
    assert response.status_code == 401
    # Its own header: browsers read one challenge a header, and skip a header that starts with Bearer.
    assert response.headers.getlist("WWW-Authenticate") == ['Bearer realm="machinery"',
                                                            'Basic realm="machinery", charset="UTF-8"']


def test_the_ui_takes_the_key_as_the_basic_password(secured):
    app, _ = secured
    client = app.test_client()
    assert client.get("/ui/workflows", headers=basic(READ_KEY)).status_code == 200
    assert client.get("/ui/workflows", headers=basic(WRONG_KEY)).status_code == 401
    assert client.get("/ui/workflows", headers={"Authorization": "Basic !!!not-base64"}).status_code == 401


def test_a_signature_of_another_body_does_not_verify(secured):
    app, _ = secured
    signed = auth.sign(b'{"data": {"message": "something else"}}', HMAC_SECRET)
    response = app.test_client().post("/e/w?mode=async", data=EVENT_BODY, content_type="application/json",
                                      headers={"X-Hub-Signature-256": signed})
    assert response.status_code == 401


def test_an_unknown_workflow_answers_401_to_a_stranger_and_404_to_a_sender(secured):
    app, _ = secured
    client = app.test_client()
    assert client.post("/e/nope", json={"message": "x"}).status_code == 401
    assert client.post("/e/nope", json={"message": "x"}, headers=bearer(SEND_KEY)).status_code == 404


def test_no_response_shows_a_workflow_secret(secured):
    app, _ = secured
    client = app.test_client()
    for path in ("/workflows/w", "/workflows", "/ui/workflows/w", "/openapi.json"):
        text = client.get(path, headers=bearer(ADMIN_KEY)).get_data(as_text=True)
        assert TOKEN not in text and HMAC_SECRET not in text, path
    assert client.get("/workflows/w", headers=bearer(ADMIN_KEY)).get_json()["ingest_auth"] == ["token", "hmac"]


def test_the_store_keeps_the_token_only_as_a_digest(secured):
    app, _ = secured
    stored = app.extensions["machinery"].store.workflows.find_one({"name": "w"})
    assert TOKEN not in repr(stored)
    assert stored["ingest_token_hash"] == auth.digest(TOKEN)


def test_a_new_version_without_secrets_drops_the_old_ones():
    app = make_app()
    client = app.test_client()
    try:
        client.post("/services", json=SERVICE)
        client.post("/workflows", json=workflow("w", ingest_token=TOKEN))
        assert client.post("/e/w?mode=async", json={"message": "x"}).status_code == 401
        assert client.post("/workflows", json=workflow("w")).status_code == 200
        assert client.post("/e/w?mode=async", json={"message": "x"}).status_code == 202
    finally:
        close(app)


def test_without_keys_everything_is_open_but_a_workflow_secret_still_holds():
    app = make_app()
    client = app.test_client()
    try:
        assert client.post("/services", json=SERVICE).status_code == 201
        assert client.post("/workflows", json=workflow("open")).status_code == 201
        assert client.post("/workflows", json=workflow("closed", ingest_token=TOKEN)).status_code == 201
        assert client.get("/events").status_code == 200
        assert client.post("/e/open?mode=async", json={"message": "x"}).status_code == 202
        assert client.post("/e/closed?mode=async", json={"message": "x"}).status_code == 401
        assert client.post("/e/closed?mode=async", json={"message": "x"},
                           headers={"X-Machinery-Token": TOKEN}).status_code == 202
    finally:
        close(app)


def test_without_keys_the_start_up_log_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="machinery.api.auth"):
        app = make_app()
    close(app)
    assert any("NO AUTHENTICATION" in record.getMessage() for record in caplog.records)


def test_keys_never_reach_the_log(caplog):
    with caplog.at_level(logging.DEBUG):
        app = make_app(API_KEYS=API_KEYS, WEBHOOK_SECRET="webhook-secret-0123456789")
        client = app.test_client()
        client.get("/services", headers=bearer(ADMIN_KEY))
        client.get("/services", headers=bearer(WRONG_KEY))
        client.post("/services", data=b"{", content_type="application/json", headers=bearer(ADMIN_KEY))
    close(app)
    text = "\n".join(record.getMessage() + repr(vars(record)) for record in caplog.records)
    for secret in (ADMIN_KEY, READ_KEY, SEND_KEY, WRONG_KEY, "webhook-secret-0123456789"):
        assert secret not in text
    assert "authentication on: 3 API keys (1 admin, 1 read, 1 send)" in text


@pytest.mark.parametrize("value,problem", [
    ("short:admin", "16 to 256 characters"),
    ("admin-key-0123456789abcdef", "not key:right"),
    ("admin-key-0123456789abcdef:root", "unknown right 'root'"),
    ("admin key 0123456789abcdef:admin", "may hold only"),
    ("admin-key-0123456789abcdef:admin,admin-key-0123456789abcdef:read", "listed twice"),
])
def test_a_bad_key_setting_is_refused_without_echoing_it(value, problem):
    from machinery.config import load_config

    with pytest.raises(ConfigError) as caught:
        load_config({"MACHINERY_API_KEYS": value})
    assert problem in caught.value.message
    assert "0123456789" not in caught.value.message


def test_rights_combine_with_a_plus():
    ring = auth.KeyRing.parse("combined-key-0123456789ab:read+send")
    key = ring.find("combined-key-0123456789ab")
    assert key.allows("read") and key.allows("send") and not key.allows("admin")
    assert ring.find("combined-key-0123456789ac") is None
