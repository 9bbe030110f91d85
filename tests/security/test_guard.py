"""The outbound guard: MACHINERY_ALLOWED_HOSTS at registration, at every call, and at webhook delivery."""

from __future__ import annotations

import pytest

from machinery import guard
from machinery.config import load_config
from machinery.exceptions import ConfigError
from machinery.runtime.worker import deliver_webhook
from machinery.serving import ServerThread
from machinery.store import EPOCH
from tests.security.conftest import SERVICE, close, make_app, workflow
from tests.support.fakes import faulty_service, webhook_receiver

POLICY = "*.internal,upper.local,127.0.0.1,10.0.0.0/8,fd00::/8"


@pytest.mark.parametrize("url", [
    "http://a.internal/", "https://deep.a.internal:8443/x", "http://upper.local:5000/", "http://UPPER.LOCAL./",
    "http://127.0.0.1:9/", "http://10.20.30.40/", "http://[fd00::1]:80/",
])
def test_a_listed_host_may_be_called(url):
    assert guard.refusal(url, POLICY) is None


@pytest.mark.parametrize("url", [
    "http://evil.example/", "http://internal/", "http://a.internal.evil.example/", "http://169.254.169.254/",
    "http://127.0.0.2/", "http://[::1]/", "http://localhost/",
    "http://127.1/", "http://2130706433/", "http://0x7f000001/",  # the resolver's other spellings of 127.0.0.1
    "http://a.internal@evil.example/", "http://evil.example\\@a.internal/", "http://a.internal /",
])
def test_any_other_host_is_refused(url):
    assert guard.refusal(url, POLICY)


def test_the_answer_for_a_url_is_kept_per_policy():
    """Answers are cached by URL and policy: the same URL under a narrower policy is refused at once,
    and a policy given as a list (not hashable) is read as its patterns."""
    url = "http://a.internal/x"
    assert guard.refusal(url, POLICY) is None and guard.refusal(url, POLICY) is None
    assert "not in MACHINERY_ALLOWED_HOSTS" in guard.refusal(url, "upper.local")
    assert guard.refusal(url, ["upper.local", "*.internal"]) is None
    assert guard.refusal(url, ["upper.local"])


def test_no_policy_allows_every_host():
    assert guard.refusal("http://169.254.169.254/", "") is None
    assert guard.refusal("http://169.254.169.254/", None) is None


@pytest.mark.parametrize("value", ["10.0.0.0/33", "bad host!", "a:b"])
def test_a_bad_pattern_is_refused_at_start_up(value):
    with pytest.raises(ConfigError) as caught:
        load_config({"MACHINERY_ALLOWED_HOSTS": value})
    assert "MACHINERY_ALLOWED_HOSTS" in caught.value.message


@pytest.fixture
def guarded():
    app = make_app(ALLOWED_HOSTS="127.0.0.1,*.internal")
    yield app
    close(app)


@pytest.mark.parametrize("method,path", [("POST", "/services"), ("POST", "/s")])
def test_registering_a_service_at_an_unlisted_host_answers_422_naming_host_and_setting(guarded, method, path):
    response = guarded.test_client().open(path, method=method, json={**SERVICE, "address": "http://169.254.169.254/"})
    assert response.status_code == 422
    body = response.get_json()
    assert "'169.254.169.254'" in body["message"] and "MACHINERY_ALLOWED_HOSTS" in body["message"]
    assert "address" in body["errors"]
    assert guarded.extensions["machinery"].store.services.count_documents({}) == 0


def test_replacing_a_service_with_an_unlisted_host_answers_422(guarded):
    client = guarded.test_client()
    assert client.post("/services", json=SERVICE).status_code == 201
    response = client.put("/services/up", json={**SERVICE, "address": "http://db.example:27017/"})
    assert response.status_code == 422
    assert guarded.extensions["machinery"].store.get_service("up")["address"] == SERVICE["address"]


def test_a_callback_url_at_an_unlisted_host_answers_422(guarded):
    client = guarded.test_client()
    client.post("/services", json=SERVICE)
    client.post("/workflows", json=workflow("w"))
    response = client.post("/e/w?mode=async", json={"data": {"message": "x"},
                                                     "callback_url": "http://169.254.169.254/latest/meta-data"})
    assert response.status_code == 422
    assert "callback_url" in response.get_json()["errors"]
    assert guarded.extensions["machinery"].store.events.count_documents({}) == 0


def test_a_host_taken_off_the_list_is_not_called_and_the_step_fails_for_good():
    service_app = faulty_service()
    server = ServerThread(service_app).start()
    app = make_app(ALLOWED_HOSTS="127.0.0.1")
    try:
        client = app.test_client()
        address = server.url.rstrip("/") + "/ok"
        assert client.post("/services", json={**SERVICE, "address": address,
                                               "retry": {"max_attempts": 5, "backoff_s": 0}}).status_code == 201
        client.post("/workflows", json=workflow("w"))
        assert client.post("/e/w", json={"message": "a"}).status_code == 201
        app.config["MACHINERY"]["ALLOWED_HOSTS"] = "*.internal"  # the operator narrows the list
        response = client.post("/e/w", json={"message": "b"})
        assert response.status_code == 502
        error = response.get_json()["error"]
        assert error["kind"] == "forbidden_host" and "'127.0.0.1'" in error["message"]
        event = client.get(f"/events/{response.get_json()['event_id']}").get_json()
        assert event["steps"][0]["attempts"] == 1
        assert sum(service_app.config["calls"].values()) == 1  # only the first event's call
    finally:
        close(app)
        server.stop()


def test_a_webhook_to_a_host_taken_off_the_list_is_not_delivered():
    receiver = webhook_receiver()
    server = ServerThread(receiver).start()
    app = make_app()
    try:
        store = app.extensions["machinery"].store
        client = app.test_client()
        client.post("/services", json=SERVICE)
        client.post("/workflows", json=workflow("w"))
        answer = client.post("/e/w?mode=async", json={"data": {"message": "x"}, "callback_url": f"{server.url}hook"})
        event = store.get_event(answer.get_json()["event_id"])
        store.update_event(event["event_id"], {"$set": {"status": "completed", "webhook": {
            "status": "pending", "attempts": [], "next_at": EPOCH}}})
        event = store.claim_webhook("me", 30)
        status = deliver_webhook(store, event, {"ALLOWED_HOSTS": "*.internal", "WEBHOOK_MAX_ATTEMPTS": 5}, "me")
        assert status == "failed"
        attempt = store.get_event(event["event_id"])["webhook"]["attempts"][0]
        assert attempt["error"].startswith("forbidden_host")
        assert receiver.config["received"] == []
    finally:
        close(app)
        server.stop()
