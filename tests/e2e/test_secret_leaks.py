"""After runs that use secrets against httpbin, which echoes the request's headers back, the values are
nowhere: not in any API reply or UI page, not in any log line, not in any stored document."""

from __future__ import annotations

import json
import logging

import pytest

from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

STORED = "stored-secret-Zq9xW2"
FROM_ENV = "env-secret-Kp4vT7"


@pytest.fixture
def config(config, monkeypatch):
    monkeypatch.setenv("MACHINERY_SECRET_FROM_ENV", FROM_ENV)
    return {**config, "EMBEDDED_WORKERS": 2, "LOG_LEVEL": "debug"}


@pytest.fixture
def replies(http):
    """Every reply the test's session receives, as text."""
    seen: list[str] = []
    http.hooks["response"].append(lambda response, *args, **kwargs: seen.append(
        f"{response.status_code} {dict(response.headers)} {response.text}"))
    return seen


HEADERS = {"Authorization": "Bearer {secret.stored_token}", "X-Api-Key": "{secret.from_env}",
           "X-Tenant": "{tenant}"}


def services(httpbin):
    inputs = [{"name": "tenant", "type": "string"}]
    return [
        {"name": "echo-headers", "address": httpbin, "inputs": inputs,
         "outputs": [{"name": "headers", "type": "object", "from": "body.headers"},
                     {"name": "authorization", "type": "string", "from": "body.headers.Authorization"}],
         "request": {"method": "GET", "path": "/headers", "headers": HEADERS}},
        {"name": "echo-anything", "address": httpbin, "inputs": inputs,
         "outputs": [{"name": "echoed", "type": "object", "from": "body"}],
         "request": {"method": "POST", "path": "/anything/{tenant}", "headers": HEADERS}},
        {"name": "bearer-token", "address": httpbin, "inputs": inputs,
         "outputs": [{"name": "token", "type": "string", "from": "body.token"}],
         "request": {"method": "GET", "path": "/bearer", "headers": HEADERS}},
        # 200 is not among its success statuses: the error keeps an excerpt of a body echoing the headers.
        {"name": "echo-in-error", "address": httpbin, "inputs": inputs, "success": [201],
         "outputs": [{"name": "token", "type": "string", "from": "body.token"}],
         "request": {"method": "GET", "path": "/headers", "headers": HEADERS},
         "retry": {"max_attempts": 2, "backoff_s": 0}},
    ]


def workflow(name, steps, outputs):
    return {"name": name, "services": steps, "inputs": [{"name": "tenant", "type": "string"}], "outputs": outputs}


def test_secret_values_appear_in_no_reply_log_or_stored_document(http, api, live, httpbin, replies, caplog):
    caplog.set_level(logging.DEBUG)
    _, app = live
    assert http.put(f"{api}/secrets/stored_token", json={"value": STORED}, timeout=10).status_code == 201
    for service in services(httpbin):
        assert http.post(f"{api}/services", json=service, timeout=10).status_code == 201
    good = workflow("echo-all", ["echo-headers", "echo-anything", "bearer-token"],
                    [{"name": "headers", "type": "object"}, {"name": "token", "type": "string"}])
    bad = workflow("echo-fails", ["echo-in-error"], [{"name": "token", "type": "string"}])
    for definition in (good, bad):
        assert http.post(f"{api}/workflows", json=definition, timeout=10).status_code == 201

    sync = http.post(f"{api}/e/echo-all", json={"tenant": "acme"}, timeout=30)
    assert sync.status_code == 201, sync.text
    outputs = sync.json()["outputs"]
    # What httpbin sent back was masked, not dropped: the test would see a leak if masking stopped.
    assert outputs["token"] == "***"
    assert outputs["headers"]["Authorization"] == "Bearer ***" and outputs["headers"]["X-Api-Key"] == "***"
    assert outputs["headers"]["X-Tenant"] == "acme"
    queued = http.post(f"{api}/e/echo-all?mode=async", json={"tenant": "beta"}, timeout=30)
    failed = http.post(f"{api}/e/echo-fails", json={"tenant": "acme"}, timeout=30)
    assert failed.status_code == 502 and "Bearer ***" in failed.json()["error"]["message"]
    retried = http.post(f"{api}/events/{failed.json()['event_id']}/retry", timeout=30)
    assert retried.json()["status"] == "failed"
    wait_until(lambda: http.get(f"{api}/events/{queued.json()['event_id']}", timeout=10).json()["status"]
               == "completed", 20, message="the async event completed")
    event_ids = [sync.json()["event_id"], queued.json()["event_id"], failed.json()["event_id"]]
    for event_id in event_ids:
        http.get(f"{api}/events/{event_id}", timeout=10)
        http.get(f"{api}/ui/events/{event_id}", timeout=10)
        http.get(f"{api}/events/{event_id}/graph", timeout=10)
    for path in ("/events", "/services", "/services/echo-headers", "/secrets", "/secrets/stored_token",
                 "/ui/services", "/ui/events", "/ui/workflows/echo-all", "/openapi.json"):
        assert http.get(f"{api}{path}", timeout=10).status_code == 200, path

    step = http.get(f"{api}/events/{event_ids[0]}", timeout=10).json()["steps"][0]
    assert step["request"]["headers"] == {"Authorization": "***", "X-Api-Key": "***", "X-Tenant": "acme"}
    for secret in (STORED, FROM_ENV):
        leaks = [reply[:200] for reply in replies if secret in reply]
        assert not leaks, f"{secret} answered by the API: {leaks}"
        lines = [record for record in caplog.records
                 if secret in record.getMessage() or secret in json.dumps(record.__dict__, default=str)]
        assert not lines, f"{secret} logged: {[record.getMessage() for record in lines]}"
        database = app.extensions["machinery"].store.db
        for name in database.list_collection_names():
            for document in database[name].find():
                assert secret not in json.dumps(document, default=str), f"{secret} stored in {name}"
    assert len(replies) > 30 and len(caplog.records) > 30
